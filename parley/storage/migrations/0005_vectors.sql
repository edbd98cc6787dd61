-- Dense retrieval, where the server has pgvector: one embedding per chunk and model.
-- Servers without the extension skip this; search then stays full-text only.
do $$
begin
    if exists (select 1 from pg_available_extensions where name = 'vector') then
        create extension if not exists vector;
        create table if not exists chunk_embeddings (
            chunk_id   bigint primary key references chunks (id) on delete cascade,
            model      text not null,
            embedding  vector not null
        );
        create index if not exists chunk_embeddings_model on chunk_embeddings (model);
    end if;
end
$$;
