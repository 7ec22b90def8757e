//! Pods: lifecycle (state directories + flock), manifest, layout, overlay mounts, launch plan.
