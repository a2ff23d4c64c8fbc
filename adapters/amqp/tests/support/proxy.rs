//! A TCP proxy in front of the broker that can cut every connection through it, so a test can
//! break the source's connection without touching the broker.

use lapin::uri::AMQPUri;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards 127.0.0.1:<port> to the broker until dropped.
pub struct Proxy {
    url: String,
    cuts: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to the broker at `broker`.
    pub async fn start(broker: &str) -> Self {
        let mut uri: AMQPUri = broker.parse().unwrap();
        let upstream = (uri.authority.host.clone(), uri.authority.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        uri.authority.host = "127.0.0.1".into();
        uri.authority.port = listener.local_addr().unwrap().port();
        let (cuts, _) = watch::channel(0u64);
        let cut_rx = cuts.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                let upstream = upstream.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Either side closing or a cut ends the pair; dropping both sockets is
                    // what the broker and the client see as the connection breaking.
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            url: uri.to_string(),
            cuts,
            accept,
        }
    }

    /// The AMQP URL that goes through this proxy.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Breaks every connection open through the proxy; new ones still go through.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
