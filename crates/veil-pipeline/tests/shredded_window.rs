//! An event whose own key period is live but whose window started in a shredded one:
//! refused whole (`epoch_shredded`), never accepted with its contribution silently left
//! out, and nothing it began to write stays in the batch.

use veil_pipeline::{
    AcceptedBatch, Door, Epoch, EpochId, EpochKeys, KeyRing, Limits, MissingId, Secret, Source,
};

const POLICY: &str = r#"
version: 1
organization: Test
collections:
  - name: t.event
    purpose: { what: test events, question: q, audience: tests }
    lawful_basis: legitimate_interest
    lawful_basis_ref: DPIA-T
    owner: tests
    zone: operational
    staging_retention: 30d
    fields:
      user:   { type: string, class: direct_identifier, transform: pseudonymize }
      region: { type: string, class: quasi_identifier, values: [eu, us] }
    metrics:
      - name: monthly
        kind: count
        by: [region]
        window: month
        contributor: user
        explain: { measures: a, does_not_mean: b, misread_when: c }
"#;

/// 2026-11-01 00:00 UTC, and 2026-12-02 12:00 UTC (the door's clock).
const NOV1: i64 = 1_793_491_200;
const NOW: i64 = NOV1 + 31 * 86_400 + 12 * 3600;

fn line(id: &str, t: &str) -> Vec<u8> {
    format!(r#"{{"event":"t.event","time":"{t}","id":"{id}","attrs":{{"user":"a@example.com","region":"eu"}}}}"#).into_bytes()
}

#[test]
fn a_window_in_a_shredded_epoch_refuses_the_event_whole() {
    let policy = veil_policy::load_str(POLICY, "p.yaml", chrono::Utc::now().date_naive())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .0;
    let live = |id: u32, start: i64, end: i64| Epoch {
        id: EpochId(id),
        start,
        end,
        created_at: start,
        shredded_at: None,
        keys: Some(EpochKeys {
            hmac: Secret::from_bytes([id as u8; 32]),
            data: Secret::from_bytes([id as u8 ^ 0x55; 32]),
        }),
    };
    let mut first = live(1, i64::MIN, NOV1 + 5 * 86_400);
    first.keys = None;
    first.shredded_at = Some(NOW);
    let second = live(2, NOV1 + 5 * 86_400, i64::MAX);
    // With both epochs live the event passes; with the first shredded it is refused.
    for (shredded, ring) in [
        (
            false,
            KeyRing::new(
                vec![live(1, i64::MIN, NOV1 + 5 * 86_400), second.clone()],
                &Secret::from_bytes([9; 32]),
            ),
        ),
        (
            true,
            KeyRing::new(vec![first, second], &Secret::from_bytes([9; 32])),
        ),
    ] {
        let door = Door::new(&policy, &ring, Limits::default(), NOW, vec![i64::MIN]);
        let src = Source {
            name: "test".into(),
            collections: None,
            consent: None,
        };
        let mut batch = AcceptedBatch::default();
        // One whole event first (its window, December, starts in the live epoch)…
        door.admit_into(
            &line("dec", "2026-12-01T10:00:00Z"),
            &src,
            MissingId::Unidentified,
            &mut batch,
        )
        .unwrap();
        let before: Vec<(usize, usize)> = batch
            .iter()
            .map(|e| (e.payload.len(), e.contributions.len()))
            .collect();
        // …then one on November 9th: its own epoch (the second) is live, November
        // started in the first.
        let r = door.admit_into(
            &line("nov", "2026-11-09T10:00:00Z"),
            &src,
            MissingId::Unidentified,
            &mut batch,
        );
        if shredded {
            let e = r.expect_err("refused");
            assert_eq!(e.reason().code(), "epoch_shredded");
            assert_eq!(batch.len(), 1);
            let after: Vec<(usize, usize)> = batch
                .iter()
                .map(|e| (e.payload.len(), e.contributions.len()))
                .collect();
            assert_eq!(
                after, before,
                "nothing of the refused event stays in the batch"
            );
            // The batch goes on: a later event is whole.
            door.admit_into(
                &line("dec2", "2026-12-02T10:00:00Z"),
                &src,
                MissingId::Unidentified,
                &mut batch,
            )
            .unwrap();
            assert_eq!(batch.iter().last().unwrap().contributions.len(), 1);
        } else {
            r.unwrap();
            assert_eq!(batch.len(), 2);
        }
    }
}
