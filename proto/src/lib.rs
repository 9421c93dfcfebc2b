//! Generated gRPC code of ordermesh's contracts, shared by the servers and clients that speak them, the
//! channel their clients balance calls over replicas with, and the one inventory client the services hold.

pub mod balance;
pub mod client;

pub use balance::Balanced;
pub use client::InventoryClient;

/// `inventory.v1`: the stock-owning service.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("inventory.v1");

        /// A client of inventory-manager at `url` (one URL or several, comma-separated; a name is resolved
        /// to every replica's address) that connects on first use and reconnects on demand, so its callers
        /// may start before inventory does, and spreads its calls over the replicas ([`crate::Balanced`]).
        /// Every call is cut after `timeout` on the client side (not only announced in `grpc-timeout`), and
        /// HTTP/2 keep-alives find a dead connection instead of waiting on it. With a `token`, every call
        /// carries it as `authorization: Bearer <token>`; `https://` URLs are spoken to with `tls`.
        pub fn lazy_client(
            url: &str,
            timeout: std::time::Duration,
            token: Option<&str>,
            tls: &ordermesh_credentials::tls::ClientTls,
        ) -> Result<inventory_service_client::InventoryServiceClient<crate::Balanced>, crate::balance::BoxError>
        {
            Ok(inventory_service_client::InventoryServiceClient::new(lazy_channel(url, timeout, token, tls)?))
        }

        /// The channel of [`lazy_client`], for a caller that wraps it in tower layers (metrics) first.
        pub fn lazy_channel(
            url: &str,
            timeout: std::time::Duration,
            token: Option<&str>,
            tls: &ordermesh_credentials::tls::ClientTls,
        ) -> Result<crate::Balanced, crate::balance::BoxError> {
            let channel = crate::Balanced::with_tls(url, timeout, tls)?;
            Ok(match token {
                Some(token) => channel.with_bearer_token(token)?,
                None => channel,
            })
        }

        /// `ErrorInfo.domain` of every structured error inventory-manager sends (the reasons are [`ErrorReason`]).
        pub const ERROR_DOMAIN: &str = "inventory.ordermesh";

        /// Encoded `FileDescriptorSet` of `inventory.v1`, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inventory_descriptor");
    }
}
