//! A slot-based KV cache: row b of the cache is one sequence, stored from position 0, with its own
//! length. Rows advance independently, so sequences of different lengths share a batch without
//! left padding, and a finished row's slot can be reused for a new prompt (continuous batching).

use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::error::Result;
use crate::invalid;

/// The axis of positions in a key tensor and in a value tensor.
const KEY_POSITIONS: i64 = 3;
const VALUE_POSITIONS: i64 = 2;

pub struct KvCache {
    /// Per layer, keys as columns: [rows, kv_heads, head_dim, capacity rounded up to 16]. The
    /// attention kernel reads the scores of 16 positions as one vector product per head
    /// dimension; the spare columns past `capacity` are never attended to.
    pub(crate) k: Vec<Tensor>,
    /// Per layer, [rows, kv_heads, capacity, head_dim].
    pub(crate) v: Vec<Tensor>,
    /// Valid positions per row.
    lens: Vec<i64>,
    capacity: i64,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, rows: i64, capacity: i64, kind: Kind, device: Device) -> KvCache {
        let make = |shape: [i64; 4]| (0..cfg.num_layers).map(|_| Tensor::zeros(shape, (kind, device))).collect::<Vec<_>>();
        let (kv, hd) = (cfg.num_kv_heads, cfg.head_dim);
        let k = make([rows, kv, hd, (capacity + 15) / 16 * 16]);
        KvCache { k, v: make([rows, kv, capacity, hd]), lens: vec![0; rows as usize], capacity }
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }
    pub fn capacity(&self) -> i64 {
        self.capacity
    }
    pub fn lens(&self) -> &[i64] {
        &self.lens
    }

    /// Check that `new_tokens` more positions (padded width) fit every row, before a forward.
    pub(crate) fn check_room(&self, width: i64) -> Result<()> {
        let longest = self.lens.iter().copied().max().unwrap_or(0);
        if longest + width > self.capacity {
            return Err(invalid!(
                "sequence too long for the KV cache: {longest} + {width} positions > capacity {}",
                self.capacity
            ));
        }
        Ok(())
    }

    /// Layer `layer`'s new keys and values k, v [B, T, kv_heads, hd] at positions 0..T of every
    /// row (a prefill into empty rows).
    pub(crate) fn write_from_start(&mut self, layer: usize, k: &Tensor, v: &Tensor) {
        let t = k.size()[1];
        self.k[layer].narrow(KEY_POSITIONS, 0, t).copy_(&k.permute([0, 2, 3, 1]));
        self.v[layer].narrow(VALUE_POSITIONS, 0, t).copy_(&v.transpose(1, 2));
    }

    /// Layer `layer`'s new keys and values k, v [B, T, kv_heads, hd] at the positions in `index`
    /// ([B, kv_heads, T, hd]: each token's position, repeated over heads and head dimension).
    pub(crate) fn scatter(&mut self, layer: usize, index: &Tensor, k: &Tensor, v: &Tensor) {
        let _ = self.k[layer].scatter_(KEY_POSITIONS, &index.transpose(2, 3), &k.permute([0, 2, 3, 1]));
        let _ = self.v[layer].scatter_(VALUE_POSITIONS, index, &v.transpose(1, 2));
    }

    /// Layer `layer`'s first `len` positions: keys [B, kv_heads, hd, len], values [B, kv_heads,
    /// len, hd] (views).
    pub(crate) fn prefix(&self, layer: usize, len: i64) -> (Tensor, Tensor) {
        (self.k[layer].narrow(KEY_POSITIONS, 0, len), self.v[layer].narrow(VALUE_POSITIONS, 0, len))
    }

    /// Every cached tensor with the axis that holds its positions.
    fn tensors_mut(&mut self) -> impl Iterator<Item = (&mut Tensor, i64)> {
        self.k.iter_mut().map(|t| (t, KEY_POSITIONS)).chain(self.v.iter_mut().map(|t| (t, VALUE_POSITIONS)))
    }

    pub(crate) fn advance(&mut self, counts: &[i64]) {
        for (len, n) in self.lens.iter_mut().zip(counts) {
            *len += n;
        }
    }

    /// Copy rows `src_rows` of `other` (same model, capacity may differ) into slots `dst_rows`,
    /// replacing what those slots held. This is how prompts prefilled on their own join a
    /// running batch.
    pub fn copy_rows_from(&mut self, other: &KvCache, src_rows: &[usize], dst_rows: &[usize]) -> Result<()> {
        if src_rows.len() != dst_rows.len() {
            return Err(invalid!("copy_rows_from: {} source rows but {} destinations", src_rows.len(), dst_rows.len()));
        }
        let width = src_rows.iter().map(|&r| other.lens[r]).max().unwrap_or(0);
        if width > self.capacity {
            return Err(invalid!("copy_rows_from: {width} positions do not fit capacity {}", self.capacity));
        }
        if width == 0 {
            for &d in dst_rows {
                self.lens[d] = 0;
            }
            return Ok(());
        }
        let device = self.k[0].device();
        let src = Tensor::from_slice(&src_rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device);
        let dst = Tensor::from_slice(&dst_rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device);
        let theirs = other.k.iter().chain(&other.v);
        for ((mine, axis), theirs) in self.tensors_mut().zip(theirs) {
            let rows = theirs.index_select(0, &src).narrow(axis, 0, width);
            let _ = mine.narrow(axis, 0, width).index_copy_(0, &dst, &rows);
        }
        for (&s, &d) in src_rows.iter().zip(dst_rows) {
            self.lens[d] = other.lens[s];
        }
        Ok(())
    }
}

impl KvCache {
    /// Empty these rows: their slots take a new sequence from position 0 (what they held is
    /// never attended to again, and is overwritten as the new sequence grows).
    pub fn clear_rows(&mut self, rows: &[usize]) {
        for &r in rows {
            if let Some(len) = self.lens.get_mut(r) {
                *len = 0;
            }
        }
    }

    /// Keep only `rows` (in that order), dropping the others: a smaller batch for the next steps.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.lens.len()) {
            return Err(invalid!("retain_rows: row {bad} out of {}", self.lens.len()));
        }
        let device = self.k[0].device();
        let index = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device);
        let width = rows.iter().map(|&r| self.lens[r]).max().unwrap_or(0).max(1).min(self.capacity);
        for (t, axis) in self.tensors_mut() {
            // Copy only the used prefix, into a buffer of the same size.
            let kept = t.narrow(axis, 0, width).index_select(0, &index);
            let mut size = t.size();
            size[0] = rows.len() as i64;
            let fresh = Tensor::zeros(size.as_slice(), (t.kind(), device));
            fresh.narrow(axis, 0, width).copy_(&kept);
            *t = fresh;
        }
        self.lens = rows.iter().map(|&r| self.lens[r]).collect();
        Ok(())
    }
}
