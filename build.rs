//! The pages in `web/` are compiled into the binary (`include_dir!`), which stable Rust does not
//! track: rebuild when any file there changes.
fn main() {
    println!("cargo:rerun-if-changed=web");
}
