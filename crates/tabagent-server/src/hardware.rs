//! What this machine offers models: CPU, memory, and ONNX Runtime's execution providers.
//! Shown by `tabagent hw` and, for ONNX Runtime, in `GET /v1/config`.

use serde_json::json;
use tabagent_onnx::{OnnxRuntime, RuntimeConfig};

/// ONNX Runtime as `config` finds it: library, version, and each provider chosen or why not.
/// Loads the runtime if nothing has yet (a process holds one).
pub fn onnx_report(config: &RuntimeConfig) -> serde_json::Value {
    match OnnxRuntime::get(config) {
        Ok(runtime) => json!({
            "available": true,
            "library": runtime.library().display().to_string(),
            "version": runtime.version(),
            "intra_threads": runtime.intra_threads(),
            "providers": runtime.providers(),
            "chosen": runtime.chosen().iter().map(|p| p.name()).collect::<Vec<_>>(),
        }),
        Err(err) => json!({"available": false, "error": err.to_string()}),
    }
}

/// The CPU's model name and the vector extensions the engines use, from `/proc/cpuinfo`.
fn cpu() -> (String, Vec<&'static str>) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let flags = field("flags").unwrap_or_default();
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let features = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_tile",
        "neon",
    ]
    .into_iter()
    .filter(|f| flags.contains(f))
    .collect();
    (model, features)
}

/// `tabagent hw`: prints the machine and ONNX Runtime's providers, or JSON with `--json`.
pub fn run(config: &crate::config::Config, as_json: bool) -> anyhow::Result<()> {
    let (model, features) = cpu();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = crate::recommended::total_memory_mib();
    let onnx = onnx_report(&config.onnx_runtime());
    if as_json {
        let report = json!({
            "cpu": {"model": model, "cores": cores, "features": features},
            "memory_mib": memory,
            "onnx_runtime": onnx,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "cpu           {model} ({cores} cores usable; {})",
        features.join(" ")
    );
    println!(
        "memory        {}",
        memory.map_or("?".to_string(), |m| format!("{m} MiB"))
    );
    if onnx["available"] != true {
        println!(
            "onnx runtime  unavailable: {}",
            onnx["error"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    println!(
        "onnx runtime  {} ({})",
        onnx["version"].as_str().unwrap_or("?"),
        onnx["library"].as_str().unwrap_or("?")
    );
    println!("providers     in order of preference:");
    for status in onnx["providers"].as_array().into_iter().flatten() {
        let name = status["provider"].as_str().unwrap_or("?");
        match status["reason"].as_str() {
            None => println!("  {name:<10} chosen"),
            Some(reason) => println!("  {name:<10} no: {reason}"),
        }
    }
    Ok(())
}
