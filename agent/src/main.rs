fn main() {
    println!("flotilla-agent {}", env!("CARGO_PKG_VERSION"));
}
