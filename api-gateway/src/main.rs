//! Entry point of api-gateway, which is not built yet.

fn main() {
    eprintln!("api-gateway is not built yet: only inventory-manager runs so far");
    std::process::exit(2);
}
