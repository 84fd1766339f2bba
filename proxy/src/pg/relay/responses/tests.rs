use bytes::BytesMut;

use super::*;

fn walk(
    r: &mut Responses,
    tags: &[u8],
    prepared: &mut Prepared,
) -> (Vec<(u8, Disposition)>, BytesMut) {
    let mut out = BytesMut::new();
    let d = tags
        .iter()
        .map(|&t| (t, r.on_server_message(t, &mut out, prepared)))
        .collect();
    (d, out)
}

#[test]
fn hidden_parse_is_swallowed_and_synthetic_answers_keep_their_place() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    r.push(Pending::Forward(Expect::Bind)); // an earlier Bind of the client
    r.push(Pending::Synthetic(Bytes::from_static(b"1\0\0\0\x04"))); // client Parse already prepared
    r.push(Pending::Hidden(Expect::Parse(Some("sidepool_1".into()))));
    r.push(Pending::Forward(Expect::Bind));
    r.push(Pending::Forward(Expect::Execute));
    r.push(Pending::Forward(Expect::Ready));
    let (d, out) = walk(&mut r, b"21D2CZ", &mut prepared);
    assert_eq!(
        &out[..],
        b"1\0\0\0\x04",
        "ParseComplete injected after the first BindComplete"
    );
    assert_eq!(
        d,
        vec![
            (b'2', Disposition::Forward),
            (b'1', Disposition::Swallow),
            (b'D', Disposition::Forward),
            (b'2', Disposition::Forward),
            (b'C', Disposition::Forward),
            (b'Z', Disposition::Forward),
        ]
    );
    assert!(r.is_empty());
}

#[test]
fn an_error_skips_to_sync_and_undoes_prepares() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    prepared.insert("sidepool_1".into(), 10);
    prepared.insert("sidepool_2".into(), 10);
    r.push(Pending::Hidden(Expect::Parse(Some("sidepool_1".into()))));
    r.push(Pending::Forward(Expect::Parse(Some("sidepool_2".into()))));
    r.push(Pending::Synthetic(Bytes::from_static(b"3\0\0\0\x04")));
    r.push(Pending::Forward(Expect::Bind));
    r.push(Pending::Forward(Expect::Ready));
    let (d, out) = walk(&mut r, b"EZ", &mut prepared);
    assert_eq!(
        d,
        vec![(b'E', Disposition::Forward), (b'Z', Disposition::Forward)]
    );
    assert!(
        out.is_empty(),
        "answers after an error are skipped like the server's"
    );
    assert!(!prepared.touch("sidepool_1") && !prepared.touch("sidepool_2"));
    assert!(r.is_empty());
}

#[test]
fn errors_inside_a_simple_query_do_not_skip() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    r.push(Pending::Forward(Expect::Ready));
    r.push(Pending::Forward(Expect::Parse(None)));
    r.push(Pending::Forward(Expect::Ready));
    let (d, _) = walk(&mut r, b"EZ1Z", &mut prepared);
    assert!(d.iter().all(|(_, d)| *d == Disposition::Forward));
    assert!(r.is_empty());
}

#[test]
fn skipped_eviction_close_keeps_the_statement_known() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    r.push(Pending::Forward(Expect::Bind));
    r.push(Pending::Hidden(Expect::Close(Some("old".into()))));
    r.push(Pending::Forward(Expect::Ready));
    walk(&mut r, b"EZ", &mut prepared);
    assert!(prepared.touch("old"));
}

#[test]
fn describe_statement_ends_at_row_description_or_no_data() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    r.push(Pending::Forward(Expect::Describe));
    r.push(Pending::Forward(Expect::Describe));
    r.push(Pending::Forward(Expect::Ready));
    let (d, _) = walk(&mut r, b"tTtnZ", &mut prepared);
    assert_eq!(d.len(), 5);
    assert!(r.is_empty());
}

#[test]
fn a_retried_cycle_hides_its_first_ready_for_query() {
    let mut r = Responses::default();
    let mut prepared = Prepared::default();
    r.push(Pending::Forward(Expect::Bind));
    r.push(Pending::Forward(Expect::Execute));
    assert!(
        !r.abandon_for_retry(&mut prepared),
        "no Sync sent yet: the server would skip a retry"
    );
    r.push(Pending::Forward(Expect::Ready));
    assert!(r.abandon_for_retry(&mut prepared));
    assert_eq!(r.front(), Some(&Pending::Hidden(Expect::Ready)));
    let (d, _) = walk(&mut r, b"Z", &mut prepared);
    assert_eq!(d, vec![(b'Z', Disposition::Swallow)]);
}
