//! The OpenAPI document covers every route, and Swagger UI is served from the gateway itself.

use crate::helpers::spawn_mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route_and_swagger_ui_is_served_offline() {
    let mesh = spawn_mesh().await;
    let (status, spec) = mesh.get("/documentation/openapi.json").await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/addToCart", "post"),
        ("/checkOutCart", "post"),
        ("/orders/{orderID}", "get"),
        ("/cart/{clientID}", "get"),
        ("/cart/{clientID}/items/{productID}", "delete"),
        ("/products", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let add = &spec["paths"]["/addToCart"]["post"]["responses"];
    for code in ["200", "400", "404", "409", "413", "415", "503", "504"] {
        assert!(add.get(code).is_some(), "/addToCart lacks {code}");
    }
    assert!(spec["components"]["schemas"]["StatusBody"].is_object(), "the error shape is documented");

    let page = mesh.http.get(mesh.url("/documentation/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
    let asset = mesh.http.get(mesh.url("/documentation/swagger-ui-bundle.js")).send().await.unwrap();
    assert_eq!(asset.status().as_u16(), 200, "assets come from the gateway, not the internet");
    mesh.stop().await;
}
