// The same rpath (and libtorch_cuda) link arguments as the policies crate: cargo applies a
// build script's link arguments only to its own crate's binaries and tests, so each crate that
// links libtorch into an executable runs this script.
include!("../policies/build.rs");
