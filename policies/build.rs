include!("build_link.rs");

fn main() {
    emit_link_args();
    compile_kernels();
}

/// The C++ files in csrc/ (each includes csrc/common.h).
const KERNEL_SOURCES: [&str; 6] = ["pointwise", "attention", "lora", "packed", "trace", "threads"];

/// Build the fused CPU kernels (csrc/*.cpp) against the libtorch that torch-sys found, with
/// the same C++ ABI flags torch-sys uses for its own wrapper.
fn compile_kernels() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch lib directory");
    let root = std::path::Path::new(&lib).parent().expect("libtorch lib directory has a parent").to_path_buf();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .opt_level(3)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // OpenMP for real, not only its simd pragmas: at::parallel_for is an inline template
        // whose threads come from `#pragma omp parallel`, compiled into this file.
        .flag("-fopenmp")
        .flag("-fno-trapping-math")
        // 64-byte vector arguments of inlined helpers: GCC notes an ABI change from 2011.
        .flag("-Wno-psabi")
        .files(KERNEL_SOURCES.iter().map(|name| format!("csrc/{name}.cpp")))
        .compile("noregret_kernels");
    link_openmp(std::path::Path::new(&lib));
}

/// Link the OpenMP runtime libtorch itself uses (wheels and libtorch archives bundle one in the
/// lib directory, sometimes under a hashed name), so the kernels' threads join torch's pool
/// instead of starting a second runtime; the system's libgomp only if there is none.
fn link_openmp(lib: &std::path::Path) {
    let bundled = std::fs::read_dir(lib).ok().into_iter().flatten().flatten().map(|e| e.file_name()).find(|name| {
        let name = name.to_string_lossy();
        name.starts_with("libgomp") && name.contains(".so")
    });
    match bundled {
        Some(name) => println!("cargo:rustc-link-lib=dylib:+verbatim={}", name.to_string_lossy()),
        None => println!("cargo:rustc-link-lib=gomp"),
    }
}
