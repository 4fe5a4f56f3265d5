include!("../policies/build_link.rs");

fn main() {
    emit_link_args();
}
