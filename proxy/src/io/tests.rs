use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::write_reading;

/// Bytes that tell their position, so a reordered or dropped byte is caught.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// Long enough that only a deadlock can exhaust it: the clock is paused, so it elapses only
/// when every task is blocked.
const DEADLOCK: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn writes_everything_to_a_peer_that_only_reads() {
    let (mut ours, mut peer) = duplex(1024);
    let data = pattern(100_000, 1);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.map(|_| got)
    });
    let mut inbox = BytesMut::new();
    let read = write_reading(&mut ours, &data, &mut inbox, 1 << 20)
        .await
        .unwrap();
    drop(ours);
    assert!(!read);
    assert!(inbox.is_empty());
    assert_eq!(reader.await.unwrap().unwrap(), data);
}

#[tokio::test(start_paused = true)]
async fn plain_write_all_deadlocks_with_a_peer_that_writes_before_reading() {
    // The control for the next test: this setup really deadlocks without concurrent reading.
    let (mut ours, mut peer) = duplex(1024);
    let theirs = pattern(64 * 1024, 2);
    tokio::spawn(async move {
        peer.write_all(&theirs).await?;
        let mut sink = vec![0; 64 * 1024];
        peer.read_exact(&mut sink).await.map(drop)
    });
    let data = pattern(64 * 1024, 3);
    let res = tokio::time::timeout(DEADLOCK, ours.write_all(&data)).await;
    assert!(
        res.is_err(),
        "write_all finished: the setup does not deadlock"
    );
}

#[tokio::test(start_paused = true)]
async fn reads_while_writing_so_a_peer_that_writes_first_does_not_deadlock() {
    let (mut ours, mut peer) = duplex(1024);
    let theirs = pattern(64 * 1024, 2);
    let sent = theirs.clone();
    let peer_task = tokio::spawn(async move {
        peer.write_all(&sent).await?;
        let mut got = vec![0; 64 * 1024];
        peer.read_exact(&mut got).await.map(|_| got)
    });
    let data = pattern(64 * 1024, 3);
    let mut inbox = BytesMut::new();
    let read = tokio::time::timeout(
        DEADLOCK,
        write_reading(&mut ours, &data, &mut inbox, 1 << 20),
    )
    .await
    .expect("write_reading deadlocked")
    .unwrap();
    assert!(read);
    assert_eq!(peer_task.await.unwrap().unwrap(), data);
    // What was read is a prefix of the peer's bytes, and the rest is still readable after.
    while inbox.len() < theirs.len() {
        assert_ne!(ours.read_buf(&mut inbox).await.unwrap(), 0, "early EOF");
    }
    assert_eq!(&inbox[..], &theirs[..]);
}

#[tokio::test(start_paused = true)]
async fn never_reads_past_cap() {
    let (mut ours, peer) = duplex(1024);
    let (mut peer_rx, mut peer_tx) = tokio::io::split(peer);
    tokio::spawn(async move { peer_tx.write_all(&pattern(3000, 4)).await });
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        peer_rx.read_to_end(&mut got).await.map(|_| got)
    });
    let data = pattern(100_000, 5);
    let mut inbox = BytesMut::new();
    let read = tokio::time::timeout(DEADLOCK, write_reading(&mut ours, &data, &mut inbox, 2000))
        .await
        .expect("write_reading deadlocked")
        .unwrap();
    drop(ours);
    assert!(read);
    assert_eq!(inbox.len(), 2000, "read up to cap, no further");
    assert_eq!(&inbox[..], &pattern(3000, 4)[..2000]);
    assert_eq!(reader.await.unwrap().unwrap(), data);
}

#[tokio::test(start_paused = true)]
async fn peer_eof_stops_reading_but_not_writing() {
    let (mut ours, peer) = duplex(1024);
    let (mut peer_rx, mut peer_tx) = tokio::io::split(peer);
    // The peer sends a little, closes its sending side, and keeps reading.
    peer_tx.write_all(b"bye").await.unwrap();
    peer_tx.shutdown().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        peer_rx.read_to_end(&mut got).await.map(|_| got)
    });
    let data = pattern(50_000, 6);
    let mut inbox = BytesMut::new();
    let read = write_reading(&mut ours, &data, &mut inbox, 1 << 20)
        .await
        .unwrap();
    drop(ours);
    assert!(read);
    assert_eq!(&inbox[..], b"bye");
    assert_eq!(reader.await.unwrap().unwrap(), data);
}

#[tokio::test]
async fn write_to_a_closed_peer_fails() {
    let (mut ours, peer) = duplex(1024);
    drop(peer);
    let mut inbox = BytesMut::new();
    let err = write_reading(&mut ours, b"hello", &mut inbox, 1024)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn empty_data_returns_at_once_without_reading() {
    let (mut ours, mut peer) = duplex(1024);
    peer.write_all(b"unread").await.unwrap();
    let mut inbox = BytesMut::new();
    let read = write_reading(&mut ours, b"", &mut inbox, 1024)
        .await
        .unwrap();
    assert!(!read);
    assert!(inbox.is_empty());
}
