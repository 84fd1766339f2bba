//! TCP options of the sockets sidepool opens to servers and accepts from clients
//! (`[pools.tcp]`): keepalive and `TCP_USER_TIMEOUT`, so that a peer that vanished without a
//! FIN or RST (a node gone, a firewall dropping packets) is noticed within the configured
//! bound instead of after the kernel's ~15 minutes of retransmissions.
//!
//! Options are set once, when a socket is opened or accepted; a reload changes what later
//! sockets get ([`SharedTcp`]), never an open socket.

use std::sync::Arc;

use parking_lot::RwLock;
use sidepool_config::{Tcp, TcpOptions};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// `[pools.tcp]` in force for one pool, shared by its connectors (every backend) and its
/// accept path; a reload writes the new options here.
pub type SharedTcp = Arc<RwLock<Tcp>>;

/// A cell holding `tcp`.
pub fn shared(tcp: &Tcp) -> SharedTcp {
    Arc::new(RwLock::new(*tcp))
}

/// Sets keepalive (or turns it off) and `TCP_USER_TIMEOUT` on `stream`.
///
/// # Errors
/// The kernel refused an option.
pub fn apply(stream: &TcpStream, options: &TcpOptions) -> std::io::Result<()> {
    let socket = SockRef::from(stream);
    match options.keepalive_idle {
        Some(idle) => {
            let keepalive = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(options.keepalive_interval)
                .with_retries(options.keepalive_count);
            socket.set_tcp_keepalive(&keepalive)?;
        }
        None => socket.set_keepalive(false)?,
    }
    // `None` restores the kernel's default (0).
    socket.set_tcp_user_timeout(options.user_timeout)
}

/// The options the kernel reports for `socket`, in `[pools.tcp]` terms (for tests and
/// diagnostics).
///
/// # Errors
/// The kernel refused a query (not a TCP socket).
pub fn options_of(socket: SockRef<'_>) -> std::io::Result<TcpOptions> {
    let on = socket.keepalive()?;
    Ok(TcpOptions {
        keepalive_idle: if on {
            Some(socket.tcp_keepalive_time()?)
        } else {
            None
        },
        keepalive_interval: socket.tcp_keepalive_interval()?,
        keepalive_count: socket.tcp_keepalive_retries()?,
        user_timeout: socket.tcp_user_timeout()?,
    })
}

/// Opens a server connection to `addr` (`host:port`, resolved now) with `TCP_NODELAY` and
/// `options`.
///
/// # Errors
/// Resolution, connection or a refused socket option.
pub async fn connect(addr: &str, options: &TcpOptions) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    apply(&stream, options)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::*;

    fn read_back(stream: &TcpStream) -> TcpOptions {
        options_of(SockRef::from(stream)).unwrap()
    }

    async fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    #[tokio::test]
    async fn connect_sets_nodelay_and_the_server_options_on_the_socket() {
        let (listener, addr) = listener().await;
        let options = Tcp::default().server;
        let stream = connect(&addr, &options).await.unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(read_back(&stream), options);
        drop(listener);
    }

    #[tokio::test]
    async fn apply_sets_client_options_on_an_accepted_socket() {
        let (listener, addr) = listener().await;
        let _client = TcpStream::connect(&addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let options = TcpOptions {
            keepalive_idle: Some(Duration::from_secs(61)),
            keepalive_interval: Duration::from_secs(7),
            keepalive_count: 9,
            user_timeout: Some(Duration::from_millis(45_500)),
        };
        apply(&accepted, &options).unwrap();
        assert_eq!(read_back(&accepted), options);
    }

    #[tokio::test]
    async fn off_values_turn_keepalive_off_and_restore_the_kernel_user_timeout() {
        let (listener, addr) = listener().await;
        let stream = connect(&addr, &Tcp::default().server).await.unwrap();
        let off = TcpOptions {
            keepalive_idle: None,
            user_timeout: None,
            ..Tcp::default().server
        };
        apply(&stream, &off).unwrap();
        let socket = SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap());
        assert_eq!(socket.tcp_user_timeout().unwrap(), None);
        drop(listener);
    }
}
