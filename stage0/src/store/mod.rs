//! The local image store: CAS blobs, the SQLite image index, the tree store and locks.
