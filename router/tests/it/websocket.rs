//! WebSocket (and any `Upgrade`) becomes a byte pipe.

use futures_util::{SinkExt, StreamExt};
use router::AppSpec;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::support::Switchyard;

async fn echo_dyno() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            break;
                        }
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_echo_through_the_router() {
    let dyno = echo_dyno().await;
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").dyno("web.1", dyno))
        .start()
        .await;
    let stream = tokio::net::TcpStream::connect(sy.addr)
        .await
        .expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://demo.localhost/socket", stream)
        .await
        .expect("handshake through the router");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "switchyard"] {
        ws.send(Message::text(text)).await.expect("send");
        let back = ws.next().await.expect("frame").expect("ok");
        assert_eq!(back.into_text().expect("text").as_str(), text);
    }
    ws.close(None).await.expect("close");
    drop(ws);
    let lines = sy.wait_lines(1).await;
    assert!(
        lines[0].starts_with("at=info method=GET path=\"/socket\" host=demo.localhost"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(" status=101 "), "{}", lines[0]);
}
