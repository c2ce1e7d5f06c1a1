fn main() {
    println!("vrrpd: not yet implemented");
}
