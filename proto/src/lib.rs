//! Generated gRPC code of ordermesh's contracts, shared by the servers and clients that speak them.

/// `inventory.v1`: the stock-owning service.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("inventory.v1");

        /// A client of inventory-manager at `url` that connects on first use and reconnects on demand,
        /// so its callers may start before inventory does. Every call is cut after `timeout` on the
        /// client side (not only announced in `grpc-timeout`), and HTTP/2 keep-alives find a dead
        /// connection instead of waiting on it.
        pub fn lazy_client(
            url: &str,
            timeout: std::time::Duration,
        ) -> Result<inventory_service_client::InventoryServiceClient<tonic::transport::Channel>, tonic::transport::Error>
        {
            Ok(inventory_service_client::InventoryServiceClient::new(lazy_channel(url, timeout)?))
        }

        /// The channel of [`lazy_client`], for a caller that wraps it in tower layers (metrics) first.
        pub fn lazy_channel(
            url: &str,
            timeout: std::time::Duration,
        ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
                .connect_timeout(timeout)
                .timeout(timeout)
                .http2_keep_alive_interval(std::time::Duration::from_secs(10))
                .keep_alive_timeout(std::time::Duration::from_secs(5))
                .keep_alive_while_idle(true);
            Ok(channel.connect_lazy())
        }

        /// `ErrorInfo.domain` of every structured error inventory-manager sends (the reasons are [`ErrorReason`]).
        pub const ERROR_DOMAIN: &str = "inventory.ordermesh";

        /// Encoded `FileDescriptorSet` of `inventory.v1`, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inventory_descriptor");
    }
}
