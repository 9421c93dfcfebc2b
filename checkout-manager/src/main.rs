//! Entry point of checkout-manager, which is not built yet.

fn main() {
    eprintln!("checkout-manager is not built yet: only inventory-manager runs so far");
    std::process::exit(2);
}
