include!("build_link.rs");

fn main() {
    emit_link_args();
    compile_kernels();
}

/// Build the fused CPU kernels (csrc/kernels.cpp) against the libtorch that torch-sys found, with
/// the same C++ ABI flags torch-sys uses for its own wrapper.
fn compile_kernels() {
    println!("cargo:rerun-if-changed=csrc/kernels.cpp");
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
        .flag("-fopenmp-simd")
        .flag("-fno-trapping-math")
        .file("csrc/kernels.cpp")
        .compile("noregret_kernels");
}
