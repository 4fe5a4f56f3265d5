//! Safetensors in and out: a checkpoint's tensors (one file or a sharded index), checked for
//! shape and completeness before anything is built, and atomic writes for adapters and exports.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use crate::error::{read_file, read_json, Error, Result};

struct Shard {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the data section starts (8-byte length prefix + JSON header).
    data_start: usize,
    metadata: Metadata,
}

/// All tensors of a checkpoint, validated on open; tensors are materialised on demand.
pub struct WeightStore {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

impl WeightStore {
    /// Open `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            Self::open_files(&[single])
        } else if index.exists() {
            #[derive(serde::Deserialize)]
            struct Index {
                weight_map: BTreeMap<String, String>,
            }
            let idx: Index = read_json(&index)?;
            let mut files: Vec<PathBuf> = idx.weight_map.values().map(|f| dir.join(f)).collect();
            files.sort();
            files.dedup();
            let store = Self::open_files(&files)?;
            for (name, file) in &idx.weight_map {
                let Some(&shard) = store.index.get(name) else {
                    return Err(Error::bad_file(&index, format!("tensor {name:?} is not in {file}")));
                };
                if store.shards[shard].path != dir.join(file) {
                    return Err(Error::bad_file(&index, format!("tensor {name:?} is not in {file}")));
                }
            }
            Ok(store)
        } else {
            Err(Error::bad_file(dir, "no model.safetensors or model.safetensors.index.json"))
        }
    }

    /// Open and validate safetensors files; a truncated or corrupt file is refused here.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let bytes = read_file(path)?;
            // `deserialize` checks that every tensor's byte range lies inside the file.
            SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&bytes)
                .map_err(|e| Error::bad_file(path, format!("not a valid safetensors file: {e}")))?;
            for name in metadata.tensors().keys() {
                if index.insert(name.clone(), shards.len()).is_some() {
                    return Err(Error::bad_file(path, format!("tensor {name:?} appears in two files")));
                }
            }
            shards.push(Shard { path: path.clone(), bytes, data_start: 8 + header_len, metadata });
        }
        Ok(WeightStore { shards, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    fn locate(&self, name: &str) -> Option<(&Shard, &TensorInfo)> {
        let shard = &self.shards[*self.index.get(name)?];
        Some((shard, shard.metadata.info(name)?))
    }

    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.locate(name).map(|(_, info)| info.shape.iter().map(|&d| d as i64).collect())
    }

    /// Load `name`, check its shape, convert to `kind` on `device`.
    pub fn load(&self, name: &str, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        let Some((shard, info)) = self.locate(name) else {
            let path = self.shards.first().map(|s| s.path.clone()).unwrap_or_default();
            return Err(Error::bad_file(&path, format!("missing tensor {name:?}")));
        };
        let actual: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        if actual != shape {
            return Err(Error::bad_file(
                &shard.path,
                format!("tensor {name:?} has shape {actual:?}, expected {shape:?}"),
            ));
        }
        let src_kind = kind_of(info.dtype)
            .ok_or_else(|| Error::bad_file(&shard.path, format!("tensor {name:?} has unsupported dtype {:?}", info.dtype)))?;
        let (start, end) = info.data_offsets;
        let data = &shard.bytes[shard.data_start + start..shard.data_start + end];
        let t = Tensor::f_from_data_size(data, shape, src_kind)?;
        Ok(t.to_device(device).to_kind(kind))
    }
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        other => return Err(crate::invalid!("cannot save tensors of kind {other:?}")),
    })
}

/// Write tensors as safetensors, tagged `format: pt` as transformers and peft expect, atomically
/// (temp file in the same folder, then rename): a crash never leaves half a file behind.
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(t.kind())?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        if numel > 0 {
            t.f_copy_data_u8(&mut bytes, numel)?;
        }
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::bad_file(path, format!("cannot serialise {name:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &bytes)
}

/// Write a file via a temp file and rename, creating the parent folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A short identity of a checkpoint directory, cheap for any size: SHA-256 over config.json and,
/// for each safetensors file, its name, size and first and last MiB. Different weights of the
/// same shapes differ in it; a copy of the same checkpoint anywhere else has the same one.
pub fn fingerprint(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut hash = Sha256::new();
    hash.update(read_file(&dir.join("config.json"))?);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::bad_file(dir, "no safetensors files"));
    }
    const SAMPLE: u64 = 1 << 20;
    for path in files {
        let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let size = f.metadata().map_err(|e| Error::io(&path, e))?.len();
        hash.update(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        hash.update(size.to_le_bytes());
        let mut buf = vec![0u8; SAMPLE.min(size) as usize];
        f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
        hash.update(&buf);
        f.seek(SeekFrom::Start(size - buf.len() as u64)).map_err(|e| Error::io(&path, e))?;
        f.read_exact(&mut buf).map_err(|e| Error::io(&path, e))?;
        hash.update(&buf);
    }
    Ok(hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}
