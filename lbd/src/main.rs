fn main() {
    println!("lbd: not yet implemented");
}
