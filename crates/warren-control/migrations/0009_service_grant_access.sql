-- Login-mode service URLs: how a port's grant is opened. `token` grants are opened with the
-- tokens minted for them; `restricted` and `workspace` grants by a signed-in user (the
-- sandbox's readers, or every member of its workspace), and never by a token.
ALTER TABLE service_grants ADD COLUMN access TEXT NOT NULL DEFAULT 'token';
