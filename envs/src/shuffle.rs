//! Seeded per-epoch orders of a fixed list: every epoch a new permutation, the same for the same
//! seed, so a resumed run sees the problems in the order an uninterrupted one would.

use std::sync::{Arc, Mutex};

use crate::rng::{derive, Rng};

const TAG_EPOCH: u64 = 0x0065_706F_6368; // "epoch"

/// A seeded per-epoch permutation of `0..n`, cached for the current epoch.
#[derive(Debug)]
pub struct EpochShuffle {
    n: usize,
    seed: u64,
    cache: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl EpochShuffle {
    pub fn new(n: usize, seed: u64) -> Self {
        EpochShuffle {
            n,
            seed,
            cache: Mutex::new(None),
        }
    }

    fn order(&self, epoch: u64) -> Arc<Vec<u32>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((e, order)) = cache.as_ref() {
            if *e == epoch {
                return order.clone();
            }
        }
        let mut order: Vec<u32> = (0..self.n as u32).collect();
        Rng::new(derive(&[self.seed, TAG_EPOCH, epoch])).shuffle(&mut order);
        let order = Arc::new(order);
        *cache = Some((epoch, order.clone()));
        order
    }

    /// The index of the `index`-th problem of `epoch`, `None` past the end.
    pub fn get(&self, epoch: u64, index: u64) -> Option<usize> {
        if index >= self.n as u64 {
            return None;
        }
        self.order(epoch).get(index as usize).map(|&i| i as usize)
    }
}

