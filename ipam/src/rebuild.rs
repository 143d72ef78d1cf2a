//! What a rebuild from recorded state (a repair loop reading Services or
//! Nodes after a restart) found wrong with its input. Rebuilding never fails
//! on bad entries: it keeps the good ones and reports the rest.

/// One input entry a `from_used` rebuild could not take as-is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebuildIssue<T> {
    /// Listed more than once; the first listing holds it, later ones are
    /// reported (two objects claim the same value).
    Duplicate(T),
    /// Not one of the allocator's usable values; ignored.
    OutOfRange(T),
    /// Inside the range but never allocatable (a node slice overlapping the
    /// service CIDR, a node bridge's address); ignored.
    Reserved(T),
}
