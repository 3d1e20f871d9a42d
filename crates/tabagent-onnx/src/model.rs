//! Any `.onnx` model: what it takes and gives, and running it on named tensors.
//!
//! Inputs are checked against the model's declared names, element types and shapes before
//! ONNX Runtime sees them, so a caller's mistake is a clear [`RunError`], not a runtime abort.
//! Sessions are pooled: concurrent calls run on separate sessions, up to the pool's size.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};
use serde::{Deserialize, Serialize};

use crate::runtime::OnnxRuntime;
use crate::ModelError;

/// Largest tensor a caller may pass, in elements.
pub const MAX_TENSOR_ELEMENTS: usize = 64 << 20;

/// One declared input or output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Element type (`float32`, `int64`, ...).
    pub element_type: String,
    /// Dimensions; `None` where sized at run time.
    pub shape: Vec<Option<i64>>,
}

/// Tensor contents of the element types callers may pass and receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "data")]
pub enum TensorData {
    /// 32-bit floats.
    Float32(Vec<f32>),
    /// 64-bit integers.
    Int64(Vec<i64>),
    /// 32-bit integers.
    Int32(Vec<i32>),
    /// Bytes.
    Uint8(Vec<u8>),
    /// Booleans.
    Bool(Vec<bool>),
}

impl TensorData {
    fn len(&self) -> usize {
        match self {
            TensorData::Float32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Uint8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    fn element_type(&self) -> &'static str {
        match self {
            TensorData::Float32(_) => "float32",
            TensorData::Int64(_) => "int64",
            TensorData::Int32(_) => "int32",
            TensorData::Uint8(_) => "uint8",
            TensorData::Bool(_) => "bool",
        }
    }
}

/// A tensor with a name and a shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    /// The model's input or output it is.
    pub name: String,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Row-major contents.
    #[serde(flatten)]
    pub data: TensorData,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The caller's tensors do not fit the model.
    #[error("{0}")]
    BadInput(String),
    /// ONNX Runtime failed while running.
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
    /// The model produced an output of a type this API does not return.
    #[error("output `{name}` has element type {element_type}, which is not returned")]
    UnsupportedOutput {
        /// The output.
        name: String,
        /// Its type.
        element_type: String,
    },
}

/// A pool of sessions over one model.
pub struct SessionPool {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

impl SessionPool {
    /// `count` sessions made by `make` (at least one).
    pub fn new(
        count: usize,
        mut make: impl FnMut() -> Result<Session, ModelError>,
    ) -> Result<Self, ModelError> {
        let sessions = (0..count.max(1))
            .map(|_| make().map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            sessions,
            next: AtomicUsize::new(0),
        })
    }

    /// A free session if there is one, else waits for the next in turn.
    pub fn session(&self) -> MutexGuard<'_, Session> {
        for session in &self.sessions {
            if let Ok(guard) = session.try_lock() {
                return guard;
            }
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        self.sessions[turn]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many sessions.
    pub fn size(&self) -> usize {
        self.sessions.len()
    }

    /// Declared inputs and outputs (from the first session; all are alike).
    fn describe(&self) -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let session = self.session();
        let info = |outlets: &[ort::value::Outlet]| {
            outlets
                .iter()
                .map(|o| tensor_info(o.name(), o.dtype()))
                .collect()
        };
        (info(session.inputs()), info(session.outputs()))
    }
}

/// A loaded `.onnx` model.
pub struct OnnxModel {
    path: PathBuf,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
    pool: SessionPool,
}

impl OnnxModel {
    /// Loads `path` into `sessions` sessions on `runtime`'s providers.
    pub fn load(
        runtime: &Arc<OnnxRuntime>,
        path: &Path,
        sessions: usize,
    ) -> Result<Self, ModelError> {
        let pool = SessionPool::new(sessions, || runtime.session_from_file(path))?;
        let (inputs, outputs) = pool.describe();
        Ok(Self {
            path: path.to_path_buf(),
            inputs,
            outputs,
            pool,
        })
    }

    /// The file it came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Declared inputs.
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }

    /// Declared outputs.
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Sessions in the pool.
    pub fn sessions(&self) -> usize {
        self.pool.size()
    }

    /// Runs the model on `inputs` (every declared input, by name) and returns every output.
    pub fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, RunError> {
        self.check(&inputs)?;
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for tensor in inputs {
            values.push((tensor.name.clone(), to_value(tensor)?));
        }
        let mut session = self.pool.session();
        let outputs = session
            .run(values)
            .map_err(|e| RunError::Runtime(e.to_string()))?;
        self.outputs
            .iter()
            .map(|info| {
                let value = outputs
                    .get(info.name.as_str())
                    .ok_or_else(|| RunError::Runtime(format!("output `{}` missing", info.name)))?;
                from_value(&info.name, value)
            })
            .collect()
    }

    fn check(&self, inputs: &[NamedTensor]) -> Result<(), RunError> {
        for tensor in inputs {
            let Some(info) = self.inputs.iter().find(|i| i.name == tensor.name) else {
                return Err(RunError::BadInput(format!(
                    "the model has no input `{}`; its inputs: {}",
                    tensor.name,
                    names(&self.inputs)
                )));
            };
            if inputs.iter().filter(|t| t.name == tensor.name).count() > 1 {
                return Err(RunError::BadInput(format!(
                    "input `{}` is given twice",
                    tensor.name
                )));
            }
            check_tensor(info, tensor)?;
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|i| !inputs.iter().any(|t| t.name == i.name))
        {
            return Err(RunError::BadInput(format!(
                "input `{}` is missing; the model's inputs: {}",
                missing.name,
                names(&self.inputs)
            )));
        }
        Ok(())
    }
}

fn names(infos: &[TensorInfo]) -> String {
    infos
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_tensor(info: &TensorInfo, tensor: &NamedTensor) -> Result<(), RunError> {
    let bad = |msg: String| {
        Err(RunError::BadInput(format!(
            "input `{}`: {msg}",
            tensor.name
        )))
    };
    if tensor.data.element_type() != info.element_type {
        return bad(format!(
            "element type {} given, the model takes {}",
            tensor.data.element_type(),
            info.element_type
        ));
    }
    if tensor.shape.len() != info.shape.len() {
        return bad(format!(
            "shape {:?} has {} dimensions, the model takes {}",
            tensor.shape,
            tensor.shape.len(),
            info.shape.len()
        ));
    }
    let mut elements: usize = 1;
    for (axis, (&given, declared)) in tensor.shape.iter().zip(&info.shape).enumerate() {
        if given < 0 {
            return bad(format!("dimension {axis} is negative"));
        }
        if let Some(declared) = declared {
            if given != *declared {
                return bad(format!(
                    "dimension {axis} is {given}, the model fixes it at {declared}"
                ));
            }
        }
        elements = elements
            .checked_mul(usize::try_from(given).unwrap_or(usize::MAX))
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                RunError::BadInput(format!(
                    "input `{}`: more than {MAX_TENSOR_ELEMENTS} elements",
                    tensor.name
                ))
            })?;
    }
    if elements != tensor.data.len() {
        return bad(format!(
            "shape {:?} holds {elements} elements but {} were given",
            tensor.shape,
            tensor.data.len()
        ));
    }
    Ok(())
}

fn to_value(tensor: NamedTensor) -> Result<DynValue, RunError> {
    let shape = tensor.shape;
    let made = match tensor.data {
        TensorData::Float32(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Int64(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Int32(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Uint8(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
        TensorData::Bool(v) => Tensor::from_array((shape, v)).map(|t| t.into_dyn()),
    };
    made.map_err(|e| RunError::BadInput(format!("input `{}`: {e}", tensor.name)))
}

fn from_value(name: &str, value: &DynValue) -> Result<NamedTensor, RunError> {
    let element_type = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(RunError::UnsupportedOutput {
                name: name.to_string(),
                element_type: other.to_string(),
            })
        }
    };
    let fail = |e: ort::Error| RunError::Runtime(e.to_string());
    let (shape, data) = match element_type {
        TensorElementType::Float32 => {
            let (s, d) = value.try_extract_tensor::<f32>().map_err(fail)?;
            (s.to_vec(), TensorData::Float32(d.to_vec()))
        }
        TensorElementType::Int64 => {
            let (s, d) = value.try_extract_tensor::<i64>().map_err(fail)?;
            (s.to_vec(), TensorData::Int64(d.to_vec()))
        }
        TensorElementType::Int32 => {
            let (s, d) = value.try_extract_tensor::<i32>().map_err(fail)?;
            (s.to_vec(), TensorData::Int32(d.to_vec()))
        }
        TensorElementType::Uint8 => {
            let (s, d) = value.try_extract_tensor::<u8>().map_err(fail)?;
            (s.to_vec(), TensorData::Uint8(d.to_vec()))
        }
        TensorElementType::Bool => {
            let (s, d) = value.try_extract_tensor::<bool>().map_err(fail)?;
            (s.to_vec(), TensorData::Bool(d.to_vec()))
        }
        other => {
            return Err(RunError::UnsupportedOutput {
                name: name.to_string(),
                element_type: element_name(other).to_string(),
            })
        }
    };
    Ok(NamedTensor {
        name: name.to_string(),
        shape,
        data,
    })
}

fn tensor_info(name: &str, dtype: &ValueType) -> TensorInfo {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            element_type: element_name(*ty).to_string(),
            shape: shape
                .iter()
                .map(|&d| if d < 0 { None } else { Some(d) })
                .collect(),
        },
        other => TensorInfo {
            name: name.to_string(),
            element_type: other.to_string(),
            shape: Vec::new(),
        },
    }
}

fn element_name(ty: TensorElementType) -> &'static str {
    match ty {
        TensorElementType::Float32 => "float32",
        TensorElementType::Float16 => "float16",
        TensorElementType::Bfloat16 => "bfloat16",
        TensorElementType::Float64 => "float64",
        TensorElementType::Int8 => "int8",
        TensorElementType::Int16 => "int16",
        TensorElementType::Int32 => "int32",
        TensorElementType::Int64 => "int64",
        TensorElementType::Uint8 => "uint8",
        TensorElementType::Uint16 => "uint16",
        TensorElementType::Uint32 => "uint32",
        TensorElementType::Uint64 => "uint64",
        TensorElementType::Bool => "bool",
        TensorElementType::String => "string",
        _ => "other",
    }
}
