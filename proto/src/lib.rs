//! Generated gRPC code of ordermesh's contracts, shared by the servers and clients that speak them.

/// `inventory.v1`: the stock-owning service.
pub mod inventory {
    /// Version 1 of the inventory contract.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, missing_debug_implementations)]
        tonic::include_proto!("inventory.v1");

        /// Encoded `FileDescriptorSet` of `inventory.v1`, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inventory_descriptor");
    }
}
