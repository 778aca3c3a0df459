//! What Pingora asks of a connection besides its bytes — its id, TLS details, timings and
//! addresses — passed through by the edge's stream wrappers: they change how bytes move,
//! never what the connection is.

/// Implements `UniqueID`, `Ssl`, `GetTimingDigest`, `GetProxyDigest` and `GetSocketDigest`
/// for `$ty` by calling its `inner` stream. `delegate_digests!(Wrapper)`, or
/// `delegate_digests!(Wrapper<S>, S: Bound)` for a generic wrapper.
macro_rules! delegate_digests {
    ($ty:ty $(, $param:ident: $bound:path)?) => {
        // A block of its own, so the traits are in scope for the calls on `inner` (through
        // a `Box<dyn IO>` too) without the caller importing them; a generic wrapper's bound
        // already brings them, hence the allow.
        const _: () = {
            #[allow(unused_imports)]
            use pingora::protocols::{
                GetProxyDigest as _, GetSocketDigest as _, GetTimingDigest as _, Ssl as _,
                UniqueID as _,
        };

        impl$(<$param: $bound>)? pingora::protocols::UniqueID for $ty {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                self.inner.id()
            }
        }

        impl$(<$param: $bound>)? pingora::protocols::Ssl for $ty {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                self.inner.get_ssl()
            }

            fn get_ssl_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                self.inner.get_ssl_digest()
            }

            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                self.inner.selected_alpn_proto()
            }
        }

        impl$(<$param: $bound>)? pingora::protocols::GetTimingDigest for $ty {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                self.inner.get_timing_digest()
            }

            fn get_read_pending_time(&self) -> std::time::Duration {
                self.inner.get_read_pending_time()
            }

            fn get_write_pending_time(&self) -> std::time::Duration {
                self.inner.get_write_pending_time()
            }
        }

        impl$(<$param: $bound>)? pingora::protocols::GetProxyDigest for $ty {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                self.inner.get_proxy_digest()
            }

            fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
                self.inner.set_proxy_digest(digest)
            }
        }

        impl$(<$param: $bound>)? pingora::protocols::GetSocketDigest for $ty {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                self.inner.get_socket_digest()
            }

            fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
                self.inner.set_socket_digest(digest)
            }
        }
        };
    };
}
