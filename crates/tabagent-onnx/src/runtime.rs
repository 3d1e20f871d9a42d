//! ONNX Runtime itself: the shared library, loaded once per process, its environment, and the
//! execution providers sessions use.
//!
//! The library is loaded at run time (`ort`'s `load-dynamic`), so one binary works with the CPU
//! library from the `onnxruntime` wheel or a GPU build the user points it at. Providers are tried
//! in a fixed order of preference; each that cannot run here says why, and the CPU provider,
//! always present, takes whatever the others do not.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use serde::Serialize;

use crate::ModelError;

/// How ONNX Runtime is found and set up. The first caller in a process decides.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Library files to try in order (`libonnxruntime.so…`); the first that exists is loaded.
    pub library_candidates: Vec<PathBuf>,
    /// When none of them exists, ask the system loader for `libonnxruntime.so` (else fail,
    /// naming the candidates: for a library the user named).
    pub system_fallback: bool,
    /// Providers the user allows, by [`Provider::name`]; empty allows every one. Allowed
    /// providers are still tried in [`Provider::PREFERENCE`] order.
    pub allowed_providers: Vec<String>,
    /// Threads one session uses inside an operator; 0 = the cores this process may use.
    pub intra_threads: usize,
}

/// Why ONNX Runtime is not usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The shared library could not be loaded.
    #[error("ONNX Runtime could not be loaded from {path}: {reason} (scripts/setup fetches it from the onnxruntime wheel; or set onnx.runtime_library / TABAGENT_ONNX__RUNTIME_LIBRARY)")]
    Library {
        /// What was tried.
        path: String,
        /// The loader's words.
        reason: String,
    },
    /// The configuration names a provider that does not exist.
    #[error("unknown execution provider `{0}`; known: {known}", known = Provider::PREFERENCE.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "))]
    UnknownProvider(String),
    /// The library loaded but could not set up its environment.
    #[error("ONNX Runtime failed to start: {0}")]
    Environment(String),
}

/// An execution provider ONNX Runtime may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// NVIDIA GPUs through CUDA.
    Cuda,
    /// NVIDIA GPUs through TensorRT.
    TensorRt,
    /// AMD GPUs through ROCm.
    Rocm,
    /// AMD GPUs through MIGraphX.
    MiGraphX,
    /// Intel CPUs, GPUs and NPUs through OpenVINO.
    OpenVino,
    /// Apple's Core ML (macOS).
    CoreMl,
    /// DirectML (Windows).
    DirectMl,
    /// Intel's oneDNN on CPU.
    OneDnn,
    /// XNNPACK on CPU.
    Xnnpack,
    /// ONNX Runtime's own CPU kernels: always there.
    Cpu,
}

impl Provider {
    /// Every provider, most preferred first.
    pub const PREFERENCE: [Provider; 10] = [
        Provider::Cuda,
        Provider::TensorRt,
        Provider::Rocm,
        Provider::MiGraphX,
        Provider::OpenVino,
        Provider::CoreMl,
        Provider::DirectMl,
        Provider::OneDnn,
        Provider::Xnnpack,
        Provider::Cpu,
    ];

    /// Its name in configuration and reports.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Cuda => "cuda",
            Provider::TensorRt => "tensorrt",
            Provider::Rocm => "rocm",
            Provider::MiGraphX => "migraphx",
            Provider::OpenVino => "openvino",
            Provider::CoreMl => "coreml",
            Provider::DirectMl => "directml",
            Provider::OneDnn => "onednn",
            Provider::Xnnpack => "xnnpack",
            Provider::Cpu => "cpu",
        }
    }

    /// The provider called `name`.
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::PREFERENCE
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The operating system it needs, when it needs one.
    fn platform(self) -> Option<&'static str> {
        match self {
            Provider::CoreMl => Some("macos"),
            Provider::DirectMl => Some("windows"),
            _ => None,
        }
    }

    /// Whether the loaded library was built with it.
    fn compiled_in(self) -> Result<bool, ort::Error> {
        match self {
            Provider::Cuda => ep::CUDA::is_available(),
            Provider::TensorRt => ep::TensorRT::is_available(),
            Provider::Rocm => ep::ROCm::is_available(),
            Provider::MiGraphX => ep::MIGraphX::is_available(),
            Provider::OpenVino => ep::OpenVINO::is_available(),
            Provider::CoreMl => ep::CoreML::is_available(),
            Provider::DirectMl => ep::DirectML::is_available(),
            Provider::OneDnn => ep::OneDNN::is_available(),
            Provider::Xnnpack => ep::XNNPACK::is_available(),
            Provider::Cpu => Ok(true),
        }
    }

    /// Its registration, failing loudly so a probe learns why.
    fn dispatch(self) -> ExecutionProviderDispatch {
        let dispatch = match self {
            Provider::Cuda => ep::CUDA::default().build(),
            Provider::TensorRt => ep::TensorRT::default().build(),
            Provider::Rocm => ep::ROCm::default().build(),
            Provider::MiGraphX => ep::MIGraphX::default().build(),
            Provider::OpenVino => ep::OpenVINO::default().build(),
            Provider::CoreMl => ep::CoreML::default().build(),
            Provider::DirectMl => ep::DirectML::default().build(),
            Provider::OneDnn => ep::OneDNN::default().build(),
            Provider::Xnnpack => ep::XNNPACK::default().build(),
            Provider::Cpu => ep::CPU::default().build(),
        };
        dispatch.error_on_failure()
    }
}

/// What became of one provider on this machine.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderStatus {
    /// The provider.
    pub provider: Provider,
    /// Whether sessions use it.
    pub chosen: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The loaded runtime. One per process.
pub struct OnnxRuntime {
    environment: Environment,
    library: PathBuf,
    version: String,
    providers: Vec<ProviderStatus>,
    intra_threads: usize,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime")
            .field("library", &self.library)
            .field("version", &self.version)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

static RUNTIME: OnceLock<Result<Arc<OnnxRuntime>, RuntimeError>> = OnceLock::new();

impl OnnxRuntime {
    /// The process's runtime, loading it on first use with `config` (later configs are
    /// ignored: a process holds one ONNX Runtime).
    pub fn get(config: &RuntimeConfig) -> Result<Arc<OnnxRuntime>, RuntimeError> {
        RUNTIME
            .get_or_init(|| Self::load(config).map(Arc::new))
            .clone()
    }

    /// The runtime if something has loaded it already.
    pub fn loaded() -> Option<Arc<OnnxRuntime>> {
        RUNTIME.get().and_then(|r| r.as_ref().ok().cloned())
    }

    fn load(config: &RuntimeConfig) -> Result<OnnxRuntime, RuntimeError> {
        let allowed: Vec<Provider> = config
            .allowed_providers
            .iter()
            .map(|name| {
                Provider::parse(name).ok_or_else(|| RuntimeError::UnknownProvider(name.clone()))
            })
            .collect::<Result<_, _>>()?;
        let library = match config.library_candidates.iter().find(|p| p.is_file()) {
            Some(found) => found.clone(),
            None if config.system_fallback || config.library_candidates.is_empty() => {
                PathBuf::from("libonnxruntime.so")
            }
            None => {
                return Err(RuntimeError::Library {
                    path: config
                        .library_candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    reason: "no such file".to_string(),
                })
            }
        };
        let environment = ort::init_from(&library)
            .map_err(|e| RuntimeError::Library {
                path: library.display().to_string(),
                reason: e.to_string(),
            })?
            .with_name("tabagent")
            .build()
            .map_err(|e| RuntimeError::Environment(e.to_string()))?;
        let version = version_of(&library, ort::info());
        let intra_threads = if config.intra_threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.intra_threads
        };
        let providers = Provider::PREFERENCE
            .into_iter()
            .map(|p| probe(&environment, p, &allowed))
            .collect();
        let runtime = OnnxRuntime {
            environment,
            library,
            version,
            providers,
            intra_threads,
        };
        tracing::info!(library = %runtime.library.display(), version = %runtime.version,
            providers = ?runtime.chosen(), "ONNX Runtime loaded");
        Ok(runtime)
    }

    /// The library file in use.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// ONNX Runtime's version, from its build information.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every provider in order of preference, chosen or why not.
    pub fn providers(&self) -> &[ProviderStatus] {
        &self.providers
    }

    /// The providers sessions register, most preferred first (always ending with the CPU).
    pub fn chosen(&self) -> Vec<Provider> {
        self.providers
            .iter()
            .filter(|s| s.chosen)
            .map(|s| s.provider)
            .collect()
    }

    /// Intra-op threads per session.
    pub fn intra_threads(&self) -> usize {
        self.intra_threads
    }

    /// A session from serialized ONNX bytes, on the chosen providers.
    pub fn session_from_bytes(&self, bytes: &[u8], origin: &Path) -> Result<Session, ModelError> {
        self.builder(origin)?
            .commit_from_memory(bytes)
            .map_err(|e| ModelError::Runtime {
                path: origin.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// A session from an `.onnx` file (external data files beside it are found).
    pub fn session_from_file(&self, path: &Path) -> Result<Session, ModelError> {
        self.builder(path)?
            .commit_from_file(path)
            .map_err(|e| ModelError::Runtime {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    fn builder(&self, origin: &Path) -> Result<SessionBuilder, ModelError> {
        let fail = |e: String| ModelError::Runtime {
            path: origin.display().to_string(),
            reason: e,
        };
        let dispatches: Vec<ExecutionProviderDispatch> =
            self.chosen().into_iter().map(Provider::dispatch).collect();
        // Each step hands the builder back inside its error; only the message is kept.
        let step = |e: ort::Error<SessionBuilder>| fail(e.to_string());
        let builder = Session::builder(&self.environment).map_err(|e| fail(e.to_string()))?;
        let builder = builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(step)?;
        let builder = builder
            .with_intra_threads(self.intra_threads)
            .map_err(step)?;
        // Idle threads sleep rather than spin: the llama.cpp engine shares these cores.
        let builder = builder.with_intra_op_spinning(false).map_err(step)?;
        builder.with_execution_providers(dispatches).map_err(step)
    }
}

/// Tries `provider`: allowed by configuration, right platform, built into the library, and
/// registering without error.
fn probe(environment: &Environment, provider: Provider, allowed: &[Provider]) -> ProviderStatus {
    let status = |chosen: bool, reason: Option<String>| ProviderStatus {
        provider,
        chosen,
        reason,
    };
    if provider == Provider::Cpu {
        return status(true, None);
    }
    if !allowed.is_empty() && !allowed.contains(&provider) {
        return status(false, Some("not in onnx.providers".to_string()));
    }
    if let Some(os) = provider.platform() {
        if os != std::env::consts::OS {
            return status(false, Some(format!("runs on {os} only")));
        }
    }
    match provider.compiled_in() {
        Ok(true) => {}
        Ok(false) => {
            return status(
                false,
                Some(
                    "not built into this ONNX Runtime library (the onnxruntime wheel is CPU-only; point onnx.runtime_library at a build with it)"
                        .to_string(),
                ),
            )
        }
        Err(e) => return status(false, Some(e.to_string())),
    }
    let registered = Session::builder(environment)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_execution_providers([provider.dispatch()])
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    match registered {
        Ok(()) => status(true, None),
        Err(reason) => status(false, Some(reason)),
    }
}

/// The version in the library's file name (`libonnxruntime.so.1.31.1`), else the release
/// branch in its build information, else that information as it is.
fn version_of(library: &Path, info: &str) -> String {
    let from_name = library
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split_once(".so."))
        .map(|(_, v)| v.to_string())
        .filter(|v| v.split('.').all(|p| p.parse::<u32>().is_ok()));
    from_name
        .or_else(|| {
            info.split(',')
                .find_map(|part| part.split_once("git-branch=rel-"))
                .map(|(_, version)| version.trim().to_string())
        })
        .unwrap_or_else(|| info.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_parse_by_name_in_any_case() {
        assert_eq!(Provider::parse("CUDA"), Some(Provider::Cuda));
        assert_eq!(Provider::parse("openvino"), Some(Provider::OpenVino));
        assert_eq!(Provider::parse("gpu"), None);
        assert_eq!(Provider::PREFERENCE.last(), Some(&Provider::Cpu));
    }

    #[test]
    fn version_comes_from_the_file_name_or_the_build_string() {
        let info = "ORT Build Info: git-branch=rel-1.30.0, git-commit-id=abc, build type=Release";
        assert_eq!(
            version_of(Path::new("/x/libonnxruntime.so.1.31.1"), info),
            "1.31.1"
        );
        assert_eq!(
            version_of(Path::new("/x/libonnxruntime.so"), info),
            "1.30.0"
        );
        assert_eq!(version_of(Path::new("onnxruntime.dll"), "other"), "other");
    }
}
