//! Fetching images: files, file://, http(s):// with revalidation, appc discovery.
