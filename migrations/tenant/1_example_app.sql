-- The example application schema every tenant starts with: users, their projects, and tasks.
-- Replace this folder (PGFLEET_TENANT_MIGRATIONS) with your application's own migrations.
CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       varchar(50) NOT NULL UNIQUE,
    email          varchar(100) NOT NULL UNIQUE,
    password_hash  varchar(255) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         varchar(100) NOT NULL,
    description  text,
    owner_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_owner_id ON projects (owner_id);

CREATE TABLE tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint REFERENCES projects (id) ON DELETE CASCADE,
    name         varchar(100) NOT NULL,
    description  text,
    assignee_id  bigint REFERENCES users (id) ON DELETE SET NULL,
    due_date     timestamptz,
    status       varchar(20) NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_project_id ON tasks (project_id);
CREATE INDEX tasks_assignee_id ON tasks (assignee_id);
