-- The sender storage quota counts a sender's unexpired rows; without an index on sender
-- every first look at a sender would scan the whole table.

create index if not exists messages_sender_expires_at_index on messages (sender, expires_at);
