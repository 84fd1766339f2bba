//! What a fleet member does after looking at its pool and the last census
//! (docs/fleet-budget.md §6), as a pure function.

use std::sync::Arc;

use sidepool_pool::Stats;

/// What identifies this sidecar's part of a fleet, for the SQL of a [`Dialect`].
#[derive(Debug, Clone)]
pub struct Spec {
    /// The pool's name.
    pub pool: Arc<str>,
    /// `host:port` of the backend.
    pub backend: String,
    /// `max_open_total`.
    pub total: u32,
    /// `min_share`.
    pub min_share: u32,
    /// The first 31 bits of SHA-256 of `sidepool/<key>`: the fleet's lock space.
    pub fleet_id: u32,
    /// This sidecar's member id, random in `1 .. 2^30`.
    pub member: u32,
    /// The users whose sessions the census counts (the pool's users).
    pub users: Vec<String>,
}

impl Spec {
    /// The spec of a sidecar's membership of fleet `key` for one backend.
    pub fn new(pool: &str, backend: &str, f: &sidepool_config::Fleet, users: Vec<String>) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("sidepool/{}", f.key).as_bytes());
        let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        Spec {
            pool: pool.into(),
            backend: backend.to_owned(),
            total: f.max_open_total,
            min_share: f.min_share,
            fleet_id: (first >> 1).max(1),
            member: rand::Rng::gen_range(&mut rand::thread_rng(), 1..(1 << 30)),
            users,
        }
    }

    /// The users as a quoted SQL list (`'a', 'b'`): quotes doubled, and backslashes too where
    /// the server treats them as escapes (MySQL).
    pub fn users_sql(&self, backslash_escapes: bool) -> String {
        let quoted: Vec<String> = self
            .users
            .iter()
            .map(|u| {
                let u = if backslash_escapes {
                    u.replace('\\', "\\\\")
                } else {
                    u.clone()
                };
                format!("'{}'", u.replace('\'', "''"))
            })
            .collect();
        quoted.join(", ")
    }
}

/// What the census asks besides counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ask {
    /// Take a reservation (this sidecar means to open a connection if there is room).
    pub reserve: bool,
    /// Mark this sidecar hungry (clients wait and it holds less than its fair share).
    pub hungry: bool,
}

/// What one census read on the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// This census took a reservation.
    pub reserved: bool,
    /// Reservations held, this census's own included.
    pub reservations: u32,
    /// Members of the fleet (distinct membership marks), this one included.
    pub members: u32,
    /// Other members marked hungry.
    pub hungry_others: u32,
    /// Backends of the pool's users the server lists (this census's connection included).
    pub backends: u32,
}

impl Reading {
    /// What the budget bounds: backends + reservations.
    pub fn used(&self) -> u32 {
        self.backends + self.reservations
    }

    /// [`Reading::used`] without this census's own reservation: the server's count as others
    /// make it.
    fn used_by_others_view(&self) -> u32 {
        self.used() - u32::from(self.reserved)
    }
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What the next census asks.
    pub ask: Ask,
    /// `max(min_share, max_open_total / members)`.
    pub fair_share: u32,
    /// Give one connection back, and why (`joiner` or `hungry`).
    pub give_back: Option<&'static str>,
}

/// The rules of docs/fleet-budget.md §6. A member with waiting clients reserves (to grow) when
/// it has local room and is below its fair share or nobody else is hungry, and marks itself
/// hungry when below its fair share; a member above its fair share gives one connection back
/// while a joiner waits (the server lists more than the budget) or another member is hungry
/// in a full fleet. A blind member never reserves.
pub fn decide(spec: &Spec, last: Option<&Reading>, st: &Stats, blind: bool) -> Decision {
    let mine = st.total();
    let members = last.map_or(1, |r| r.members.max(1));
    let fair_share = (spec.total / members).max(spec.min_share);
    let hungry = st.waiting > 0;
    let below = mine < fair_share;
    let others_hungry = last.map_or(0, |r| r.hungry_others);
    let reserve = !blind && hungry && mine < st.max_open && (below || others_hungry == 0);
    let give_back = match last {
        Some(r) if mine > fair_share => {
            let used = r.used_by_others_view();
            if used > spec.total {
                Some("joiner")
            } else if r.hungry_others > 0 && used >= spec.total {
                Some("hungry")
            } else {
                None
            }
        }
        _ => None,
    };
    Decision {
        ask: Ask {
            reserve,
            hungry: hungry && below,
        },
        fair_share,
        give_back,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(total: u32, min_share: u32) -> Spec {
        Spec {
            pool: "app".into(),
            backend: "db:5432".into(),
            total,
            min_share,
            fleet_id: 7,
            member: 1,
            users: vec!["app".into()],
        }
    }

    fn pool(held: u32, waiting: u32) -> Stats {
        Stats {
            max_open: 40,
            in_use: held,
            waiting,
            ..Stats::default()
        }
    }

    fn reading(backends: u32, members: u32, hungry_others: u32) -> Reading {
        Reading {
            reserved: false,
            reservations: 0,
            members,
            hungry_others,
            backends,
        }
    }

    #[test]
    fn the_fair_share_is_the_budget_over_the_members_but_never_below_min_share() {
        let s = spec(12, 1);
        assert_eq!(decide(&s, None, &pool(0, 0), false).fair_share, 12);
        let r = reading(12, 5, 0);
        assert_eq!(decide(&s, Some(&r), &pool(2, 0), false).fair_share, 2);
        let r = reading(40, 50, 0);
        assert_eq!(
            decide(&spec(40, 1), Some(&r), &pool(1, 0), false).fair_share,
            1
        );
        assert_eq!(
            decide(&spec(40, 2), Some(&r), &pool(1, 0), false).fair_share,
            2
        );
    }

    #[test]
    fn a_member_with_waiting_clients_reserves_below_its_share_or_when_nobody_else_is_hungry() {
        let s = spec(12, 1);
        let r = reading(10, 4, 0);
        let d = decide(&s, Some(&r), &pool(5, 3), false);
        assert_eq!(
            d.ask,
            Ask {
                reserve: true,
                hungry: false
            },
            "above its share, nobody hungry"
        );
        let r = reading(10, 4, 1);
        let d = decide(&s, Some(&r), &pool(5, 3), false);
        assert!(
            !d.ask.reserve,
            "above its share while another is hungry: leave the room"
        );
        let d = decide(&s, Some(&r), &pool(1, 3), false);
        assert_eq!(
            d.ask,
            Ask {
                reserve: true,
                hungry: true
            }
        );
        assert!(
            !decide(&s, Some(&r), &pool(1, 0), false).ask.reserve,
            "nobody waits"
        );
        assert!(
            !decide(&s, Some(&r), &pool(1, 3), true).ask.reserve,
            "blind"
        );
        let mut full = pool(40, 3);
        full.max_open = 40;
        assert!(
            !decide(&spec(100, 1), Some(&r), &full, false).ask.reserve,
            "local max_open"
        );
    }

    #[test]
    fn a_member_above_its_share_gives_one_back_to_a_joiner_or_a_hungry_member_in_a_full_fleet() {
        let s = spec(12, 1);
        // Four members, share 3: a joiner makes the server list 13.
        let d = decide(&s, Some(&reading(13, 4, 0)), &pool(5, 0), false);
        assert_eq!(d.give_back, Some("joiner"));
        let d = decide(&s, Some(&reading(12, 4, 1)), &pool(5, 0), false);
        assert_eq!(d.give_back, Some("hungry"));
        let d = decide(&s, Some(&reading(11, 4, 1)), &pool(5, 0), false);
        assert_eq!(
            d.give_back, None,
            "room left: the hungry member grows by itself"
        );
        let d = decide(&s, Some(&reading(13, 4, 1)), &pool(3, 0), false);
        assert_eq!(d.give_back, None, "at its share: keeps it");
    }

    #[test]
    fn its_own_reservation_is_not_taken_for_a_joiner() {
        let s = spec(12, 1);
        let mut r = reading(12, 4, 0);
        r.reserved = true;
        r.reservations = 1;
        assert_eq!(decide(&s, Some(&r), &pool(5, 2), false).give_back, None);
    }
}
