//! Row-major tensors owned by Rust: the bytes of one request's input or output, concatenated
//! into batches and split back by rows without the Python interpreter.

use crate::error::{CoreError, CoreResult};

/// Element type of a tensor: numpy's type number and item size. Two tensors batch together only
/// when their dtypes are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DType {
    pub num: i32,
    pub itemsize: usize,
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

    fn row_bytes(&self) -> usize {
        self.inner_shape().iter().product::<usize>() * self.dtype.itemsize
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

/// Split a batch tensor given as raw parts (`data` is its C-contiguous bytes) into tensors of
/// `rows[i]` rows each. Fails when the rows do not add up to the tensor's first dimension.
pub fn split(
    dtype: DType,
    shape: &[usize],
    data: &[u8],
    rows: &[usize],
) -> CoreResult<Vec<Tensor>> {
    let total: usize = rows.iter().sum();
    if shape.first() != Some(&total) {
        let got = match shape.first() {
            Some(n) => format!("{n} rows"),
            None => "no batch dimension".to_string(),
        };
        return Err(CoreError::Inference(format!(
            "has {got} for a batch of {total} rows; outputs must have the batch dimension first"
        )));
    }
    let row_bytes = shape[1..].iter().product::<usize>() * dtype.itemsize;
    if row_bytes * total != data.len() {
        return Err(CoreError::Inference(format!(
            "holds {} bytes, expected {} for shape {shape:?}",
            data.len(),
            row_bytes * total
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut at = 0;
    for &n in rows {
        let mut s = shape.to_vec();
        s[0] = n;
        out.push(Tensor {
            dtype,
            shape: s,
            data: data[at..at + n * row_bytes].to_vec(),
        });
        at += n * row_bytes;
    }
    Ok(out)
}

impl Tensor {
    /// Split this tensor into consecutive row blocks (see [`split`]).
    pub fn split_rows(&self, rows: &[usize]) -> CoreResult<Vec<Tensor>> {
        debug_assert!(self.row_bytes() * self.rows() == self.data.len());
        split(self.dtype, &self.shape, &self.data, rows)
    }
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
    fn concat_then_split_round_trips() {
        let a = t(1, 3, 0.0);
        let b = t(2, 3, 10.0);
        let c = t(3, 3, 100.0);
        let batch = concat(&[&a, &b, &c]).unwrap();
        assert_eq!(batch.shape, vec![6, 3]);
        let parts = batch.split_rows(&[1, 2, 3]).unwrap();
        assert_eq!(parts, vec![a, b, c]);
    }

    #[test]
    fn concat_refuses_different_inner_shapes() {
        let err = concat(&[&t(1, 3, 0.0), &t(1, 4, 0.0)]).unwrap_err();
        assert!(err.to_string().contains("[1, 4]"), "{err}");
    }

    #[test]
    fn split_refuses_wrong_row_count() {
        let err = t(3, 2, 0.0).split_rows(&[1, 1]).unwrap_err();
        assert!(matches!(err, CoreError::Inference(_)));
        assert!(
            err.to_string().contains("3 rows for a batch of 2 rows"),
            "{err}"
        );
    }

    #[test]
    fn new_checks_byte_length_and_batch_dimension() {
        assert!(Tensor::new(F32, vec![2, 2], vec![0; 15]).is_err());
        assert!(Tensor::new(F32, vec![], vec![0; 4]).is_err());
        assert!(Tensor::new(F32, vec![0, 2], vec![]).is_ok());
    }
}
