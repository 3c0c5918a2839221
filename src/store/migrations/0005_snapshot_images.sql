-- Where a completed prebuild's snapshot was pushed, by digest (empty when
-- its runner keeps snapshots locally): what pools pull, and what deletion
-- removes from the registry.
ALTER TABLE prebuilds ADD COLUMN snapshot_image TEXT NOT NULL DEFAULT '';
