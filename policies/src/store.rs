//! safetensors files and crash-safe writes.
//!
//! Every file is written to a temporary name in the same directory, fsynced, renamed over the
//! final name and the directory fsynced: a reader sees the old file or the new one, never a
//! torn one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};
use safetensors::{Dtype, View};

use crate::error::{Error, Result};

/// A tensor as raw little-endian bytes (f32 or u8).
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn f32(v: Vec<f32>, shape: &[usize]) -> Self {
        RawTensor {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn u8(v: Vec<u8>, shape: &[usize]) -> Self {
        RawTensor {
            dtype: Dtype::U8,
            shape: shape.to_vec(),
            data: v,
        }
    }
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
    /// Copies f32 values out; the tensor must be f32 of exactly `out.len()` values.
    pub fn copy_f32(&self, out: &mut [f32]) -> Result<()> {
        if self.dtype != Dtype::F32 || self.data.len() != out.len() * 4 {
            return Err(Error::Spec(format!(
                "expected {} f32 values, found {:?} of {} bytes",
                out.len(),
                self.dtype,
                self.data.len()
            )));
        }
        for (o, c) in out.iter_mut().zip(self.data.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
    pub fn copy_u8(&self, out: &mut [u8]) -> Result<()> {
        if self.dtype != Dtype::U8 || self.data.len() != out.len() {
            return Err(Error::Spec(format!(
                "expected {} u8 values, found {:?} of {} bytes",
                out.len(),
                self.dtype,
                self.data.len()
            )));
        }
        out.copy_from_slice(&self.data);
        Ok(())
    }
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.elements()];
        self.copy_f32(&mut v)?;
        Ok(v)
    }
    /// From a candle tensor (converted to f32 on the host).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let v = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(RawTensor::f32(v, t.dims()))
    }
    pub fn to_tensor(&self, dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            self.to_f32_vec()?,
            self.shape.as_slice(),
            dev,
        )?)
    }
}

impl View for &RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialises tensors and string metadata to safetensors bytes.
pub fn to_bytes<S: AsRef<str> + Ord + std::fmt::Display>(
    tensors: &[(S, RawTensor)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    safetensors::serialize(
        tensors.iter().map(|(n, t)| (n, t)),
        if metadata.is_empty() {
            None
        } else {
            Some(metadata)
        },
    )
    .map_err(|e| Error::Spec(format!("cannot serialise tensors: {e}")))
}

/// Parses safetensors bytes (`what` names the source in errors).
pub fn from_bytes(
    bytes: &[u8],
    what: &Path,
) -> Result<(HashMap<String, RawTensor>, HashMap<String, String>)> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::ckpt(what, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::ckpt(what, format!("unreadable safetensors header: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if !matches!(view.dtype(), Dtype::F32 | Dtype::U8) {
            return Err(Error::ckpt(
                what,
                format!(
                    "tensor {name:?} has dtype {:?}; only F32 and U8 are used",
                    view.dtype()
                ),
            ));
        }
        out.insert(
            name,
            RawTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            },
        );
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

pub fn write_tensors<S: AsRef<str> + Ord + std::fmt::Display>(
    path: &Path,
    tensors: Vec<(S, RawTensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    atomic_write(path, &to_bytes(&tensors, metadata)?)
}

pub fn read_tensors(path: &Path) -> Result<(HashMap<String, RawTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, path)
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            d.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Converts candle tensors to raw ones, sorted by name.
pub fn raw_from_named(tensors: &HashMap<String, Tensor>) -> Result<Vec<(String, RawTensor)>> {
    let mut v = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), RawTensor::from_tensor(t)?)))
        .collect::<Result<Vec<_>>>()?;
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Converts raw f32 tensors to candle tensors on `dev`.
pub fn named_to_candle(
    raw: &HashMap<String, RawTensor>,
    dev: &Device,
) -> Result<HashMap<String, Tensor>> {
    raw.iter()
        .filter(|(_, t)| t.dtype == Dtype::F32)
        .map(|(n, t)| Ok((n.clone(), t.to_tensor(dev)?)))
        .collect()
}
