//! Entry point of cart-manager, which is not built yet.

fn main() {
    eprintln!("cart-manager is not built yet: only inventory-manager runs so far");
    std::process::exit(2);
}
