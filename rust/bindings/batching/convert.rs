//! numpy arrays in and out of Rust-owned tensors: request inputs copied into [`Tensor`]s,
//! batch inputs wrapped as arrays without copying, and each request's rows of the runner's
//! outputs as zero-copy views.

use crate::batching::tensor::{self, DType, Tensor};
use crate::error::{CoreError, CoreResult};
use numpy::npyffi::{self, NpyTypes, NPY_ARRAY_WRITEABLE, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use std::os::raw::c_int;
use std::sync::{Arc, Mutex};

/// Named tensors sharing one name list (outputs of a batch, or one request's inputs).
pub(super) struct Named {
    pub(super) names: Arc<[String]>,
    pub(super) tensors: Vec<Tensor>,
}

/// numpy dtype descriptors seen so far, by type number, to rebuild arrays from tensors.
#[derive(Default)]
pub(super) struct Descrs(Mutex<Vec<(i32, Py<PyArrayDescr>)>>);

impl Descrs {
    fn remember(&self, descr: &Bound<'_, PyArrayDescr>) -> DType {
        let num = descr.num();
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|(n, _)| *n == num) {
            known.push((num, descr.clone().unbind()));
        }
        DType {
            num,
            itemsize: descr.itemsize(),
        }
    }

    pub(super) fn get<'py>(
        &self,
        py: Python<'py>,
        dtype: DType,
    ) -> PyResult<Bound<'py, PyArrayDescr>> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known
            .iter()
            .find(|(n, _)| *n == dtype.num)
            .map(|(_, d)| d.bind(py).clone())
            .ok_or_else(|| PyException::new_err(format!("unknown dtype number {}", dtype.num)))
    }
}

/// Copy one numpy array (or anything `numpy.asarray` accepts) into a tensor; errors name it
/// as input `name`.
fn to_tensor(descrs: &Descrs, name: &str, value: &Bound<'_, PyAny>) -> CoreResult<Tensor> {
    let py = value.py();
    let converted;
    let mut arr = match value.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => {
            converted = numpy_asarray(py, value)
                .map_err(|e| CoreError::invalid(format!("input '{name}' is not an array: {e}")))?;
            converted
                .cast_into::<PyUntypedArray>()
                .map_err(|_| CoreError::invalid(format!("input '{name}' is not an array")))?
        }
    };
    let descr = arr.dtype();
    if descr.kind() == b'O' {
        return bytes_tensor(name, &arr);
    }
    if !matches!(descr.kind(), b'b' | b'i' | b'u' | b'f' | b'c') {
        return Err(CoreError::invalid(format!(
            "input '{name}' has dtype {}; batching handles bool, integer, float and complex \
             arrays and object arrays of bytes (BYTES)",
            descr.str().map(|s| s.to_string()).unwrap_or_default()
        )));
    }
    if descr.is_native_byteorder() == Some(false) {
        return Err(CoreError::invalid(format!(
            "input '{name}' is not in native byte order"
        )));
    }
    if arr.ndim() == 0 {
        return Err(CoreError::invalid(format!(
            "input '{name}' is a 0-d array; inputs need a batch dimension first"
        )));
    }
    if !arr.is_c_contiguous() {
        arr = arr
            .call_method0("copy")
            .and_then(|c| Ok(c.cast_into::<PyUntypedArray>()?))
            .map_err(|e| {
                CoreError::invalid(format!("input '{name}': cannot make it contiguous: {e}"))
            })?;
    }
    let dtype = descrs.remember(&descr);
    let shape = arr.shape().to_vec();
    let len = shape.iter().product::<usize>() * dtype.itemsize;
    // SAFETY: a C-contiguous array of this shape and item size holds `len` bytes at `data`;
    // the interpreter is held, so it cannot be freed or resized while we copy.
    let data = unsafe {
        let ptr = (*arr.as_array_ptr()).fields.data as *const u8;
        if len == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(ptr, len).to_vec()
        }
    };
    Tensor::new(dtype, shape, data)
}

/// Serialize an object array of bytes (KServe BYTES) into a [`DType::BYTES`] tensor; `str`
/// elements are taken as UTF-8. Errors name the input and the element.
fn bytes_tensor(name: &str, arr: &Bound<'_, PyUntypedArray>) -> CoreResult<Tensor> {
    if arr.ndim() == 0 {
        return Err(CoreError::invalid(format!(
            "input '{name}' is a 0-d array; inputs need a batch dimension first"
        )));
    }
    let shape = arr.shape().to_vec();
    let flat = arr
        .call_method1("reshape", (-1,))
        .and_then(|f| f.call_method0("tolist"))
        .map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?;
    let mut owned: Vec<Vec<u8>> = Vec::with_capacity(shape.iter().product());
    for (i, item) in flat
        .try_iter()
        .map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?
        .enumerate()
    {
        let item = item.map_err(|e| CoreError::invalid(format!("input '{name}': {e}")))?;
        let bytes = if let Ok(b) = item.cast::<PyBytes>() {
            b.as_bytes().to_vec()
        } else if let Ok(s) = item.cast::<PyString>() {
            s.to_str()
                .map_err(|e| CoreError::invalid(format!("input '{name}' element {i}: {e}")))?
                .as_bytes()
                .to_vec()
        } else {
            return Err(CoreError::invalid(format!(
                "input '{name}' element {i} is {}, not bytes (BYTES elements are bytes)",
                item.get_type()
            )));
        };
        owned.push(bytes);
    }
    let data = tensor::serialize_bytes(owned.iter().map(Vec::as_slice))?;
    Tensor::new(DType::BYTES, shape, data)
}

/// An object array of bytes (each element a new bytes object) from a [`DType::BYTES`] tensor.
fn bytes_array<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    let elements = tensor::deserialize_bytes(&t.data, t.shape.iter().product())?;
    let list: Vec<Bound<'py, PyBytes>> = elements.iter().map(|e| PyBytes::new(py, e)).collect();
    let numpy = py.import("numpy")?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("dtype", numpy.getattr("object_")?)?;
    let flat = numpy.call_method("empty", (list.len(),), Some(&kwargs))?;
    for (i, item) in list.into_iter().enumerate() {
        flat.set_item(i, item)?;
    }
    flat.call_method1("reshape", (PyTuple::new(py, &t.shape)?,))
}

pub(super) fn numpy_asarray<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("numpy")?.getattr("asarray")?.call1((value,))
}

/// Wrap a tensor as a numpy array without copying: the array views the tensor's buffer, owned
/// by a uint8 array set as its base.
fn to_array<'py>(py: Python<'py>, descrs: &Descrs, t: Tensor) -> PyResult<Bound<'py, PyAny>> {
    if t.dtype.is_bytes() {
        return bytes_array(py, &t);
    }
    let descr = descrs.get(py, t.dtype)?;
    let mut dims: Vec<npyffi::npy_intp> = t.shape.iter().map(|&d| d as npyffi::npy_intp).collect();
    let base = PyArray1::<u8>::from_vec(py, t.data);
    // SAFETY: `data` is the buffer `base` owns; `descr` is an owned reference.
    unsafe {
        let data = (*base.as_array_ptr()).fields.data;
        array_view(
            py,
            descr.into_ptr() as *mut npyffi::PyArray_Descr,
            &mut dims,
            data as *mut std::ffi::c_void,
            NPY_ARRAY_WRITEABLE,
            base.into_any(),
        )
    }
}

/// A numpy array over `data` (shape `dims`) kept alive by `base`.
///
/// # Safety
/// `descr` is an owned descriptor reference (stolen, also on failure); `data` points into a
/// buffer that `base` owns and that holds the whole array. Standard numpy C-API use:
/// `SetBaseObject` steals the `base` reference (also on failure), so the buffer lives as long
/// as the new array.
unsafe fn array_view<'py>(
    py: Python<'py>,
    descr: *mut npyffi::PyArray_Descr,
    dims: &mut [npyffi::npy_intp],
    data: *mut std::ffi::c_void,
    flags: c_int,
    base: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    unsafe {
        let arr = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, NpyTypes::PyArray_Type),
            descr,
            dims.len() as c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data,
            flags,
            std::ptr::null_mut(),
        );
        if arr.is_null() {
            return Err(PyErr::fetch(py));
        }
        let arr = Bound::from_owned_ptr(py, arr);
        if PY_ARRAY_API.PyArray_SetBaseObject(
            py,
            arr.as_ptr() as *mut npyffi::PyArrayObject,
            base.into_ptr(),
        ) < 0
        {
            return Err(PyErr::fetch(py));
        }
        Ok(arr)
    }
}

pub(super) fn to_dict<'py>(
    py: Python<'py>,
    descrs: &Descrs,
    named: Named,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, t) in named.names.iter().zip(named.tensors) {
        dict.set_item(name, to_array(py, descrs, t)?)?;
    }
    Ok(dict)
}

/// The sorted input names of the latest request, shared by later requests with the same
/// names so that a request allocates no name strings.
#[derive(Default)]
pub(super) struct InputNames(Mutex<Option<Arc<[String]>>>);

impl InputNames {
    pub(super) fn intern(&self, sorted: &[&str]) -> Arc<[String]> {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(names) = last.as_ref() {
            if names.len() == sorted.len() && names.iter().zip(sorted).all(|(a, b)| a == b) {
                return Arc::clone(names);
            }
        }
        let names: Arc<[String]> = sorted.iter().map(|s| s.to_string()).collect();
        *last = Some(Arc::clone(&names));
        names
    }
}

/// Read a request's inputs: names sorted, one tensor each, all with the same rows.
pub(super) fn read_inputs(
    descrs: &Descrs,
    known: &InputNames,
    inputs: &Bound<'_, PyDict>,
) -> CoreResult<(Named, usize)> {
    if inputs.is_empty() {
        return Err(CoreError::invalid("a request needs at least one input"));
    }
    let mut pairs = Vec::with_capacity(inputs.len());
    for (k, v) in inputs.iter() {
        let key = k.cast_into::<PyString>().map_err(|e| {
            CoreError::invalid(format!(
                "input names must be strings, got {}",
                e.into_inner()
            ))
        })?;
        pairs.push((key, v));
    }
    let mut items = Vec::with_capacity(pairs.len());
    for (key, v) in &pairs {
        let name = key
            .to_str()
            .map_err(|e| CoreError::invalid(format!("input name {key} is not valid text: {e}")))?;
        items.push((name, to_tensor(descrs, name, v)?));
    }
    items.sort_by(|a, b| a.0.cmp(b.0));
    let rows = items[0].1.rows();
    if let Some((name, t)) = items.iter().find(|(_, t)| t.rows() != rows) {
        return Err(CoreError::invalid(format!(
            "input '{name}' has {} rows but input '{}' has {rows}; the inputs of one request share the batch dimension",
            t.rows(),
            items[0].0
        )));
    }
    let (names, tensors): (Vec<&str>, Vec<Tensor>) = items.into_iter().unzip();
    Ok((
        Named {
            names: known.intern(&names),
            tensors,
        },
        rows,
    ))
}

/// One output array of a batch as the runner returned it (made C-contiguous if it was not).
/// Each request gets a view of its rows whose base is this array, so no bytes are copied and
/// the array lives as long as any view of it.
pub(super) struct BatchOutput {
    pub(super) descr: Py<PyArrayDescr>,
    pub(super) shape: Vec<usize>,
    pub(super) data: *mut u8,
    pub(super) row_bytes: usize,
    pub(super) writeable: bool,
    pub(super) array: Py<PyAny>,
}

// SAFETY: `data` points into `array`, which this value keeps alive; it is only dereferenced
// by numpy through views made with the interpreter held.
unsafe impl Send for BatchOutput {}
unsafe impl Sync for BatchOutput {}

/// The outputs of one batch, shared by the requests that ran in it.
pub(super) struct BatchOutputs {
    pub(super) names: Vec<String>,
    pub(super) outputs: Vec<BatchOutput>,
}

/// One request's rows of its batch's outputs.
pub(super) struct Rows {
    pub(super) batch: Arc<BatchOutputs>,
    pub(super) start: usize,
    pub(super) rows: usize,
}

/// A numpy view of rows `start..start + rows` of `out`.
fn row_view<'py>(
    py: Python<'py>,
    out: &BatchOutput,
    start: usize,
    rows: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npyffi::npy_intp> =
        out.shape.iter().map(|&d| d as npyffi::npy_intp).collect();
    dims[0] = rows as npyffi::npy_intp;
    let flags = if out.writeable {
        NPY_ARRAY_WRITEABLE
    } else {
        0
    };
    // SAFETY: the rows lie inside the C-contiguous buffer of `out.array` (the runner's output
    // was checked to have all the batch's rows), which becomes the view's base.
    unsafe {
        array_view(
            py,
            out.descr.clone_ref(py).into_ptr() as *mut npyffi::PyArray_Descr,
            &mut dims,
            out.data.add(start * out.row_bytes) as *mut std::ffi::c_void,
            flags,
            out.array.bind(py).clone().into_any(),
        )
    }
}

pub(super) fn rows_dict<'py>(py: Python<'py>, r: &Rows) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, out) in r.batch.names.iter().zip(&r.batch.outputs) {
        dict.set_item(name, row_view(py, out, r.start, r.rows)?)?;
    }
    Ok(dict)
}
