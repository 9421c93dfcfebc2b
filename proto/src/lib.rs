//! Generated gRPC code of ordermesh's contracts, shared by the servers and clients that speak them.

/// `inventory.v1`: the stock-owning service.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("inventory.v1");

        /// A client of inventory-manager at `url` that connects on first use and reconnects on demand,
        /// so its callers may start before inventory does.
        pub fn lazy_client(
            url: &str,
            connect_timeout: std::time::Duration,
        ) -> Result<inventory_service_client::InventoryServiceClient<tonic::transport::Channel>, tonic::transport::Error>
        {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_timeout(connect_timeout);
            Ok(inventory_service_client::InventoryServiceClient::new(channel.connect_lazy()))
        }

        /// Encoded `FileDescriptorSet` of `inventory.v1`, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inventory_descriptor");
    }
}
