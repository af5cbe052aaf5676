-- The original's step `2024-03-05-001-messageID-upgrade`: the auto-increment integer primary
-- key `messageId` becomes a client-chosen unique string. This leaves `messages` without a
-- primary key (InnoDB clusters on the unique NOT NULL `messageId` index).

-- guard: column-type messages messageId int
alter table `messages` drop `messageId`;

-- guard: no-column messages messageId
alter table `messages` add `messageId` varchar(255) not null;

-- guard: no-index messages messages_messageid_unique
alter table `messages` add unique `messages_messageid_unique`(`messageId`);
