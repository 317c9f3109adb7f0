-- The sandbox settings a captured snapshot carries (capture's `include`), as JSON; snapshots
-- from before carry none.
ALTER TABLE snapshots ADD COLUMN carried TEXT NOT NULL DEFAULT '{}';
