//! The checkout table: a slab, so that checkout and check-in cost no hashing. A checkout's slot
//! index travels in its guard.

/// Entries addressed by the index `insert` returned; freed indexes are reused.
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }

    pub fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.entries[slot] = Some(value);
                slot
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    pub fn remove(&mut self, slot: usize) -> Option<T> {
        let value = self.entries.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::Slab;

    #[test]
    fn removed_slots_are_reused_and_removed_once() {
        let mut slab = Slab::new();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.insert("c"), a);
        assert_eq!(slab.iter().copied().collect::<Vec<_>>(), vec!["c", "b"]);
        assert_eq!(slab.remove(b), Some("b"));
        assert_eq!(slab.remove(99), None);
    }
}
