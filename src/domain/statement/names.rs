//! The names a parsed statement holds: the catalogs, schemas and tables it reads or writes, the
//! query ids it names, whether it starts a transaction.

use super::*;

/// The session's catalog and schema, normalized.
pub(super) struct Scope {
    pub(super) catalog: Option<String>,
    pub(super) schema: Option<String>,
}

impl Scope {
    pub(super) fn new(defaults: &Defaults<'_>) -> Scope {
        let norm = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_lowercase);
        Scope { catalog: norm(defaults.catalog), schema: norm(defaults.schema) }
    }
}

pub(super) fn ident(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// The normalized parts of a name; `None` when a part is not an identifier.
pub(super) fn parts(name: &ObjectName) -> Option<Vec<String>> {
    name.0.iter().map(|part| part.as_ident().map(ident)).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// The facts gathered so far.
pub(super) struct Collector<'s> {
    pub(super) scope: &'s Scope,
    pub(super) catalogs: BTreeSet<String>,
    pub(super) schemas: BTreeSet<String>,
    pub(super) read: BTreeSet<String>,
    pub(super) written: BTreeSet<String>,
    pub(super) query_ids: BTreeSet<String>,
    pub(super) starts_transaction: bool,
}

impl<'s> Collector<'s> {
    pub(super) fn new(scope: &'s Scope) -> Collector<'s> {
        Collector {
            scope,
            catalogs: BTreeSet::new(),
            schemas: BTreeSet::new(),
            read: BTreeSet::new(),
            written: BTreeSet::new(),
            query_ids: BTreeSet::new(),
            starts_transaction: false,
        }
    }

    pub(super) fn finish(self, kind: StatementKind) -> StatementFacts {
        StatementFacts {
            kind,
            catalogs: self.catalogs.into_iter().collect(),
            schemas: self.schemas.into_iter().collect(),
            tables: self.read.union(&self.written).cloned().collect(),
            tables_read: self.read.into_iter().collect(),
            tables_written: self.written.into_iter().collect(),
            query_ids: self.query_ids.into_iter().collect(),
            starts_transaction: self.starts_transaction,
        }
    }

    pub(super) fn catalog(&mut self, catalog: &str) {
        if !self.catalogs.contains(catalog) {
            self.catalogs.insert(catalog.to_owned());
        }
    }

    /// Records what a `catalog`, `schema` pair names; each may be unknown.
    pub(super) fn catalog_schema(&mut self, catalog: Option<&str>, schema: Option<&str>) -> Option<String> {
        let catalog = catalog?;
        self.catalog(catalog);
        let qualified = format!("{catalog}.{}", schema?);
        self.schemas.insert(qualified.clone());
        Some(qualified)
    }

    /// A table, view or routine name of 1 to 3 parts; a table is recorded unless `access` is `None`.
    pub(super) fn object(&mut self, parts: &[String], access: Option<Access>) {
        let scope = self.scope;
        let (catalog, schema, table) = match parts {
            [t] => (scope.catalog.as_deref(), scope.schema.as_deref(), t),
            [s, t] => (scope.catalog.as_deref(), Some(s.as_str()), t),
            [c, s, t] => (Some(c.as_str()), Some(s.as_str()), t),
            _ => return,
        };
        let (Some(schema), Some(access)) = (self.catalog_schema(catalog, schema), access) else {
            return;
        };
        let table = format!("{schema}.{table}");
        match access {
            Access::Read => self.read.insert(table),
            Access::Write => self.written.insert(table),
        };
    }

    pub(super) fn table(&mut self, name: &ObjectName, access: Access) {
        if let Some(parts) = parts(name) {
            self.object(&parts, Some(access));
        }
    }

    /// A schema name of 1 or 2 parts.
    pub(super) fn schema_parts(&mut self, parts: &[String]) {
        match parts {
            [s] => self.catalog_schema(self.scope.catalog.as_deref(), Some(s)),
            [c, s] => self.catalog_schema(Some(c), Some(s)),
            _ => None,
        };
    }

    pub(super) fn schema(&mut self, name: &ObjectName) {
        if let Some(parts) = parts(name) {
            self.schema_parts(&parts);
        }
    }

    /// The kind of `statement`; records the names it defines or writes, and returns the table
    /// factor that is the statement's target (UPDATE, DELETE, MERGE), which is written, not read.
    pub(super) fn describe<'a>(
        &mut self,
        statement: &'a Statement,
    ) -> (StatementKind, Option<&'a ObjectName>) {
        use StatementKind as K;
        let kind = match statement {
            Statement::Query(_) => K::Select,
            Statement::Insert(insert) => {
                if let TableObject::TableName(name) = &insert.table {
                    self.table(name, Access::Write);
                }
                K::Insert
            }
            Statement::CreateTable(create) => {
                self.table(&create.name, Access::Write);
                match &create.like {
                    Some(CreateTableLikeKind::Parenthesized(like) | CreateTableLikeKind::Plain(like)) => {
                        self.table(&like.name, Access::Read)
                    }
                    None => {}
                }
                if let Some(clone) = &create.clone {
                    self.table(clone, Access::Read);
                }
                if create.query.is_some() { K::CreateTableAs } else { K::Ddl }
            }
            Statement::Update(update) => {
                let target = table_name(&update.table.relation);
                self.write_target(target);
                return (K::Update, target);
            }
            Statement::Delete(delete) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &delete.from;
                let target = from.first().and_then(|t| table_name(&t.relation));
                self.write_target(target);
                return (K::Delete, target);
            }
            Statement::Merge(merge) => {
                let target = table_name(&merge.table);
                self.write_target(target);
                return (K::Merge, target);
            }
            Statement::CreateView(view) => {
                self.table(&view.name, Access::Write);
                K::Ddl
            }
            Statement::AlterTable(alter) => {
                self.table(&alter.name, Access::Write);
                for operation in &alter.operations {
                    if let AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::To(name) | RenameTableNameKind::As(name),
                    } = operation
                    {
                        self.table(name, Access::Write);
                    }
                }
                K::Ddl
            }
            Statement::AlterView(alter) => {
                self.table(&alter.name, Access::Write);
                K::Ddl
            }
            Statement::AlterSchema(alter) => {
                self.schema(&alter.name);
                K::Ddl
            }
            Statement::CreateSchema { schema_name, .. } => {
                if let SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) = schema_name {
                    self.schema(name);
                }
                K::Ddl
            }
            Statement::Drop { object_type, names, .. } => {
                for name in names {
                    match object_type {
                        ObjectType::Table | ObjectType::View | ObjectType::MaterializedView => {
                            self.table(name, Access::Write)
                        }
                        ObjectType::Schema | ObjectType::Database => self.schema(name),
                        _ => {}
                    }
                }
                K::Ddl
            }
            Statement::Truncate(truncate) => {
                for target in &truncate.table_names {
                    self.table(&target.name, Access::Write);
                }
                K::Ddl
            }
            Statement::Comment { object_type, object_name, .. } => {
                match (object_type, parts(object_name)) {
                    (
                        CommentObject::Table | CommentObject::View | CommentObject::MaterializedView,
                        Some(p),
                    ) => self.object(&p, Some(Access::Write)),
                    (CommentObject::Column, Some(p)) if p.len() > 1 => {
                        self.object(&p[..p.len() - 1], Some(Access::Write))
                    }
                    (CommentObject::Schema, Some(p)) => self.schema_parts(&p),
                    _ => {}
                }
                K::Ddl
            }
            other => self.describe_other(other),
        };
        (kind, None)
    }

    /// The kind of a statement that writes nothing: grants, show and describe statements (recording
    /// what they name), and the session and transaction statements.
    fn describe_other(&mut self, statement: &Statement) -> StatementKind {
        use StatementKind as K;
        match statement {
            Statement::Grant(grant) => {
                self.grant_objects(grant.objects.as_ref());
                K::Ddl
            }
            Statement::Revoke(revoke) => {
                self.grant_objects(revoke.objects.as_ref());
                K::Ddl
            }
            Statement::CreateIndex(_)
            | Statement::CreateRole(_)
            | Statement::CreateFunction(_)
            | Statement::DropFunction(_)
            | Statement::CreateDatabase { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::AlterRole { .. }
            | Statement::RenameTable(_) => K::Ddl,
            Statement::RefreshMaterializedView(refresh) => {
                self.table(&refresh.name, Access::Write);
                K::Other
            }
            Statement::Analyze(analyze) => {
                if let Some(name) = &analyze.table_name {
                    self.table(name, Access::Read);
                }
                K::Other
            }
            Statement::ExplainTable { table_name, .. } => {
                self.table(table_name, Access::Read);
                K::ShowDescribe
            }
            Statement::ShowCreate { obj_type, obj_name } => {
                if matches!(obj_type, ShowCreateObject::Table | ShowCreateObject::View) {
                    self.table(obj_name, Access::Read);
                }
                K::ShowDescribe
            }
            Statement::ShowColumns { show_options, .. } => {
                if let Some(name) = shown_in(show_options) {
                    self.table(name, Access::Read);
                }
                K::ShowDescribe
            }
            Statement::ShowTables { show_options, .. } | Statement::ShowViews { show_options, .. } => {
                match shown_in(show_options) {
                    Some(name) => self.schema(name),
                    None => {
                        let scope = self.scope;
                        self.catalog_schema(scope.catalog.as_deref(), scope.schema.as_deref());
                    }
                }
                K::ShowDescribe
            }
            Statement::ShowSchemas { show_options, .. } => {
                match shown_in(show_options) {
                    Some(name) => {
                        if let Some([catalog]) = parts(name).as_deref() {
                            self.catalog(catalog);
                        }
                    }
                    None => {
                        if let Some(catalog) = self.scope.catalog.as_deref() {
                            self.catalog(catalog);
                        }
                    }
                }
                K::ShowDescribe
            }
            Statement::ShowVariable { variable } => {
                // sqlparser reads `SHOW STATS FOR t` and `SHOW GRANTS ON [TABLE] t` as one variable.
                let words: Vec<String> = variable.iter().map(ident).collect();
                let is = |i: usize, word: &str| words.get(i).is_some_and(|w| w == word);
                let name = if is(0, "stats") && is(1, "for") {
                    2
                } else if is(0, "grants") && is(1, "on") {
                    2 + usize::from(is(2, "table"))
                } else {
                    words.len()
                };
                if name < words.len() {
                    self.object(&words[name..], Some(Access::Read));
                }
                K::ShowDescribe
            }
            Statement::ShowFunctions { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowCollation { .. }
            | Statement::ShowObjects(_)
            | Statement::ShowCharset(_)
            | Statement::ShowProcessList { .. } => K::ShowDescribe,
            other => self.describe_session(other),
        }
    }

    /// The kind of a session, call or transaction statement; records what it names.
    fn describe_session(&mut self, statement: &Statement) -> StatementKind {
        use StatementKind as K;
        match statement {
            Statement::Set(Set::SingleAssignment {
                scope: Some(ContextModifier::Session), variable, ..
            }) => {
                if let Some([catalog, _]) = parts(variable).as_deref() {
                    self.catalog(catalog);
                }
                K::SetSession
            }
            Statement::Set(_) | Statement::Reset(_) => K::Other,
            Statement::Use(target) => {
                match target {
                    Use::Object(name) | Use::Schema(name) | Use::Database(name) => self.schema(name),
                    Use::Catalog(name) => {
                        if let Some([catalog]) = parts(name).as_deref() {
                            self.catalog(catalog);
                        }
                    }
                    _ => {}
                }
                K::Use
            }
            Statement::Call(function) => {
                if let Some(name) = parts(&function.name) {
                    self.object(&name, None);
                    if name.last().is_some_and(|n| n == "kill_query") {
                        self.kill_query_ids(&function.args);
                    }
                }
                K::Call
            }
            Statement::Execute { .. } => K::Execute,
            Statement::Prepare { .. } => K::Prepare,
            Statement::Deallocate { .. } => K::Deallocate,
            Statement::StartTransaction { .. } => {
                self.starts_transaction = true;
                K::TransactionControl
            }
            Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => K::TransactionControl,
            _ => K::Other,
        }
    }

    pub(super) fn write_target(&mut self, target: Option<&ObjectName>) {
        if let Some(name) = target {
            self.table(name, Access::Write);
        }
    }

    pub(super) fn grant_objects(&mut self, objects: Option<&GrantObjects>) {
        match objects {
            Some(GrantObjects::Tables(names) | GrantObjects::Views(names)) => {
                for name in names {
                    self.table(name, Access::Write);
                }
            }
            Some(GrantObjects::Schemas(names)) => {
                for name in names {
                    self.schema(name);
                }
            }
            _ => {}
        }
    }

    /// `kill_query(query_id => '...')` or `kill_query('...')`.
    pub(super) fn kill_query_ids(&mut self, args: &FunctionArguments) {
        let FunctionArguments::List(list) = args else { return };
        let literal = |arg: &FunctionArgExpr| match arg {
            FunctionArgExpr::Expr(Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let id = list.args.iter().find_map(|arg| match arg {
            FunctionArg::Named { name, arg, .. } if ident(name) == "query_id" => literal(arg),
            _ => None,
        });
        let id = id.or_else(|| match list.args.first() {
            Some(FunctionArg::Unnamed(arg)) => literal(arg),
            _ => None,
        });
        if let Some(id) = id.filter(|id| QueryId::parse(id).is_ok()) {
            self.query_ids.insert(id);
        }
    }

    /// Records the tables `statement` reads: every table factor that is not a CTE, a table
    /// function, or (once) the statement's own `target`; and the catalogs of table functions.
    pub(super) fn sources(&mut self, statement: &Statement, target: Option<&ObjectName>) {
        let mut sources = Sources::default();
        let _ = statement.visit(&mut sources);
        let mut skip_target = target.and_then(parts);
        for name in &sources.tables {
            if skip_target.as_ref() == Some(name) {
                skip_target = None;
                continue;
            }
            if let [single] = name.as_slice()
                && sources.ctes.contains(single)
            {
                continue;
            }
            self.object(name, Some(Access::Read));
        }
        for name in &sources.functions {
            self.object(name, None);
        }
    }
}

pub(super) fn table_name(factor: &TableFactor) -> Option<&ObjectName> {
    match factor {
        TableFactor::Table { name, args: None, .. } => Some(name),
        _ => None,
    }
}

pub(super) fn shown_in(options: &ShowStatementOptions) -> Option<&ObjectName> {
    options.show_in.as_ref().and_then(|i| i.parent_name.as_ref())
}

/// Table factors, qualified table functions and CTE names, in visiting order.
#[derive(Default)]
pub(super) struct Sources {
    tables: Vec<Vec<String>>,
    functions: Vec<Vec<String>>,
    ctes: BTreeSet<String>,
}

impl Visitor for Sources {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(with.cte_tables.iter().map(|cte| ident(&cte.alias.name)));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let Some(name) = table_name(factor).and_then(parts) {
            self.tables.push(name);
        } else if let TableFactor::TableFunction { expr: Expr::Function(function), .. } = factor
            && let Some(name) = parts(&function.name)
            && name.len() > 1
        {
            // A connector's table function (`TABLE(pg.system.query(...))`): not a table, but its
            // catalog counts. A 1-part name is a built-in, in no catalog of the session.
            self.functions.push(name);
        }
        ControlFlow::Continue(())
    }
}
