-- The sender storage quota counts a sender's unexpired rows (`sender = ? AND (expires_at IS
-- NULL OR expires_at > ?)`); the original has no index on sender, so without this every
-- first look at a sender would scan the whole table. (The recipient's quota is served by
-- messages_recipient_messageboxid_created_at_index.)

-- guard: no-index messages messages_sender_expires_at_index
alter table `messages` add index `messages_sender_expires_at_index`(`sender`, `expires_at`);
