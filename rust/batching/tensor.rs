//! Row-major tensors owned by Rust: the bytes of one request's input, concatenated into
//! batches without the Python interpreter.

use crate::error::{CoreError, CoreResult};

/// Element type of a tensor: numpy's type number and item size. Two tensors batch together only
/// when their dtypes are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    pub num: i32,
    pub itemsize: usize,
}

impl DType {
    /// Variable-length byte strings (KServe BYTES, numpy object arrays of bytes): the data is
    /// the elements in row-major order, each a 4-byte little-endian length then its bytes
    /// (Triton's serialization), so concatenating tensors concatenates their rows.
    pub const BYTES: DType = DType {
        num: 17,
        itemsize: 0,
    };

    /// Whether this is [`DType::BYTES`] (serialized elements rather than fixed-size items).
    pub fn is_bytes(&self) -> bool {
        *self == DType::BYTES
    }
}

/// Serialize byte strings as [`DType::BYTES`] data.
pub fn serialize_bytes<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> CoreResult<Vec<u8>> {
    let mut data = Vec::new();
    for e in elements {
        let len = u32::try_from(e.len())
            .map_err(|_| CoreError::invalid("a BYTES element is longer than 4 GiB"))?;
        data.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(e);
    }
    Ok(data)
}

/// The `count` elements of [`DType::BYTES`] data; fails when the data holds another number of
/// elements or ends inside one.
pub fn deserialize_bytes(data: &[u8], count: usize) -> CoreResult<Vec<&[u8]>> {
    let mut out = Vec::with_capacity(count);
    let mut rest = data;
    while !rest.is_empty() {
        let (head, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| CoreError::invalid("BYTES data ends inside a length"))?;
        let len = u32::from_le_bytes(*head) as usize;
        if tail.len() < len {
            return Err(CoreError::invalid("BYTES data ends inside an element"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    if out.len() != count {
        return Err(CoreError::invalid(format!(
            "BYTES data holds {} elements, the shape needs {count}",
            out.len()
        )));
    }
    Ok(out)
}

/// A C-contiguous tensor whose first dimension is the batch (rows) dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    /// A tensor from its parts; fails when the byte length does not match dtype and shape or
    /// when there is no batch dimension.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<u8>) -> CoreResult<Self> {
        if shape.is_empty() {
            return Err(CoreError::invalid(
                "a tensor needs a batch dimension (got a 0-d array)",
            ));
        }
        if dtype.is_bytes() {
            deserialize_bytes(&data, shape.iter().product())?;
            return Ok(Tensor { dtype, shape, data });
        }
        let expected = shape.iter().product::<usize>() * dtype.itemsize;
        if expected != data.len() {
            return Err(CoreError::invalid(format!(
                "tensor of shape {shape:?} and item size {} needs {expected} bytes, got {}",
                dtype.itemsize,
                data.len()
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// Number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// The dimensions after the batch dimension.
    pub fn inner_shape(&self) -> &[usize] {
        &self.shape[1..]
    }
}

/// Concatenate tensors along the batch dimension. All parts must share dtype and inner shape
/// (the scheduler only batches compatible requests; this re-checks).
pub fn concat(parts: &[&Tensor]) -> CoreResult<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| CoreError::invalid("cannot concatenate zero tensors"))?;
    let mut rows = 0;
    let mut bytes = 0;
    for p in parts {
        if p.dtype != first.dtype || p.inner_shape() != first.inner_shape() {
            return Err(CoreError::invalid(format!(
                "cannot batch a tensor of shape {:?} with one of shape {:?}",
                p.shape, first.shape
            )));
        }
        rows += p.rows();
        bytes += p.data.len();
    }
    let mut data = Vec::with_capacity(bytes);
    for p in parts {
        data.extend_from_slice(&p.data);
    }
    let mut shape = first.shape.clone();
    shape[0] = rows;
    Ok(Tensor {
        dtype: first.dtype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const F32: DType = DType {
        num: 11,
        itemsize: 4,
    };

    fn t(rows: usize, cols: usize, start: f32) -> Tensor {
        let vals: Vec<f32> = (0..rows * cols).map(|i| start + i as f32).collect();
        let data = vals.iter().flat_map(|v| v.to_ne_bytes()).collect();
        Tensor::new(F32, vec![rows, cols], data).unwrap()
    }

    #[test]
    fn concat_stacks_rows_in_order() {
        let a = t(1, 3, 0.0);
        let b = t(2, 3, 10.0);
        let batch = concat(&[&a, &b]).unwrap();
        assert_eq!(batch.shape, vec![3, 3]);
        assert_eq!(batch.data, [a.data, b.data].concat());
    }

    #[test]
    fn concat_refuses_different_inner_shapes() {
        let err = concat(&[&t(1, 3, 0.0), &t(1, 4, 0.0)]).unwrap_err();
        assert!(err.to_string().contains("[1, 4]"), "{err}");
    }

    fn strings(rows: &[&[u8]]) -> Tensor {
        let data = serialize_bytes(rows.iter().copied()).unwrap();
        Tensor::new(DType::BYTES, vec![rows.len(), 1], data).unwrap()
    }

    #[test]
    fn bytes_tensors_concatenate_their_rows() {
        let a = strings(&[b"ab", b""]);
        let b = strings(&[b"xyz"]);
        let batch = concat(&[&a, &b]).unwrap();
        assert_eq!(batch.shape, vec![3, 1]);
        let elements = deserialize_bytes(&batch.data, 3).unwrap();
        assert_eq!(elements, vec![&b"ab"[..], b"", b"xyz"]);
    }

    #[test]
    fn bytes_data_must_hold_the_shape() {
        let data = serialize_bytes([&b"ab"[..]]).unwrap();
        assert!(Tensor::new(DType::BYTES, vec![2], data.clone()).is_err());
        assert!(Tensor::new(DType::BYTES, vec![1], data[..5].to_vec()).is_err());
        assert!(Tensor::new(DType::BYTES, vec![1], data[..2].to_vec()).is_err());
    }

    #[test]
    fn new_checks_byte_length_and_batch_dimension() {
        assert!(Tensor::new(F32, vec![2, 2], vec![0; 15]).is_err());
        assert!(Tensor::new(F32, vec![], vec![0; 4]).is_err());
        assert!(Tensor::new(F32, vec![0, 2], vec![]).is_ok());
    }
}
