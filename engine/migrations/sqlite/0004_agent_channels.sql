-- Which connections an agent talks on. One agent at most takes a connection's inbound
-- traffic (the partial unique index), so a customer's message has exactly one agent.
CREATE TABLE agent_channels (
    agent_id      TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    inbound       INTEGER NOT NULL,
    PRIMARY KEY (agent_id, connection_id)
);

CREATE UNIQUE INDEX agent_channels_inbound ON agent_channels (connection_id) WHERE inbound = 1;
