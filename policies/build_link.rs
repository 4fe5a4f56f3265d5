// Give every binary and test of a crate an rpath to libtorch, so they run without
// LD_LIBRARY_PATH, and keep libtorch_cuda linked when it exists (the linker's --as-needed
// would drop it: nothing references it directly, but it registers the CUDA backend). Cargo
// applies a build script's link arguments only to its own crate's binaries and tests, so each
// crate that links libtorch into an executable includes this file in its build script.
fn emit_link_args() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
