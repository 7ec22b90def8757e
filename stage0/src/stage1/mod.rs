//! stage1 images: selection (--stage1-*), entrypoint resolution and exec.
