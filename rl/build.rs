// Give every binary and test of this crate an rpath to libtorch, so they run without
// LD_LIBRARY_PATH, and keep libtorch_cuda linked when it exists (the linker's --as-needed
// would drop it: nothing references it directly, but it registers the CUDA backend).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
