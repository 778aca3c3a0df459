//! The configuration's keys as a reload reports them, and when a running process takes
//! each one's new value.
//!
//! Each section declares its keys once, beside its converter, with [`key_table!`]: a
//! dotted name and its [`Applied`] class. The section's `changes` function then compares
//! old and new by exhaustive destructuring, so a new field does not compile until it is
//! noted under one of the keys; a key declared and never noted is dead code, which clippy
//! refuses. `changes.rs` walks the sections in the order reload reports them.

/// When a running process takes a key's new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// At the reload: the value is read per request or rebuilt by every reload.
    Live,
    /// At the next restart: the value is read once at start (listeners, threads, stores).
    /// A reload names the key as not applied.
    AtRestart,
    /// At the next restart, except that removing the section applies at once: the feature
    /// reads the new settings per request and stops when they are gone.
    AtRestartUnlessRemoved,
}

/// One key of the configuration: its dotted name as the reload's log line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub name: &'static str,
    pub applied: Applied,
}

/// What a reload changed, by key: applied live, or waiting for a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub applied: Vec<&'static str>,
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    /// Notes `key` when `old` and `new` differ. Several fields may share a key (`auth`):
    /// it is listed once.
    pub(super) fn note<T: PartialEq + ?Sized>(&mut self, key: Key, old: &T, new: &T) {
        self.note_as(key, old != new, false);
    }

    /// Like [`Changes::note`] for a value that exists only while its section does: `new`
    /// being `None` means the section was removed.
    pub(super) fn note_optional<T: PartialEq>(
        &mut self,
        key: Key,
        old: &Option<T>,
        new: &Option<T>,
    ) {
        self.note_as(key, old != new, new.is_none());
    }

    fn note_as(&mut self, key: Key, changed: bool, removed: bool) {
        if !changed {
            return;
        }
        let live = match key.applied {
            Applied::Live => true,
            Applied::AtRestart => false,
            Applied::AtRestartUnlessRemoved => removed,
        };
        let list = match live {
            true => &mut self.applied,
            false => &mut self.need_restart,
        };
        if !list.contains(&key.name) {
            list.push(key.name);
        }
    }
}

/// Declares a section's keys: one `const` per key (`NAME = Applied("dotted.name");`,
/// `pub(super)` when `changes.rs` compares the whole value itself), and, for the tests,
/// `KEYS`: all of them in order.
macro_rules! key_table {
    ($($(#[$doc:meta])* $vis:vis $const:ident = $applied:ident($name:literal);)+) => {
        $(
            $(#[$doc])*
            $vis const $const: $crate::config::keys::Key = $crate::config::keys::Key {
                name: $name,
                applied: $crate::config::keys::Applied::$applied,
            };
        )+
        /// Every key of the section, in the order they are declared.
        pub(super) const KEYS: &[$crate::config::keys::Key] = &[$($const),+];
    };
}
pub(super) use key_table;
