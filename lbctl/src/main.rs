fn main() {
    println!("lbctl: not yet implemented");
}
