//! Records the target triple this agent is built for (the default `target`
//! of its config, and the artifact it asks releases for).
fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    println!("cargo:rustc-env=FLOTILLA_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
