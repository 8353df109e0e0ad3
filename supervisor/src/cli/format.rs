//! `--format` for `ps` and `inspect`, as Docker's: a Go text/template
//! (gtmpl, a Rust implementation of Go's `text/template`) over the JSON a
//! verb would print, with Docker's extra functions (`json`, `join`,
//! `upper`, `lower`, `split`); `table ...` lays rows out in aligned
//! columns under a header; `json` is `{{json .}}`. A literal `\t` in the
//! format is a tab, as Docker reads it.

use std::io::Write;

use gtmpl::{Context, Func, FuncError, Template, Value};
use serde_json::Value as Json;

use super::Failure;

/// A parsed `--format`.
pub struct Format {
    tmpl: Template,
    table: bool,
}

impl Format {
    /// Parses `spec`; `json` stands for `{{json .}}`.
    pub fn parse(spec: &str) -> Result<Format, Failure> {
        let (table, body) = match spec.trim_start().strip_prefix("table") {
            Some(rest) => (true, rest.trim_start()),
            None => (false, spec),
        };
        let body = if body.trim() == "json" {
            "{{json .}}".to_string()
        } else {
            body.replace("\\t", "\t").replace("\\n", "\n")
        };
        let mut tmpl = Template::default();
        let funcs: &[(&str, Func)] = &[
            ("json", json),
            ("join", join),
            ("upper", upper),
            ("lower", lower),
            ("split", split),
        ];
        tmpl.add_funcs(funcs);
        tmpl.parse(body).map_err(|e| Failure {
            message: format!("invalid --format: {e}"),
            code: 125,
        })?;
        Ok(Format { tmpl, table })
    }

    /// Whether this is a `table` format (aligned, with a header).
    pub fn is_table(&self) -> bool {
        self.table
    }

    /// Renders one item.
    pub fn render(&self, item: &Json) -> Result<String, Failure> {
        self.render_value(to_gtmpl(item))
    }

    /// Renders one item given as the template engine's value.
    pub fn render_value(&self, item: Value) -> Result<String, Failure> {
        self.tmpl
            .render(&Context::from(item))
            .map_err(|e| Failure::new(format!("--format: {e}")))
    }
}

/// Prints rendered rows, each followed by a newline; a table's columns are
/// aligned (tab-separated cells, padded by 3 as Docker's tabwriter, widths
/// counted in displayed characters). A reader that went away ends the
/// output quietly. Written through a buffer: stdout alone makes a write
/// of each line, thousands of them for `ps` at thousands of containers.
pub fn print_rows<R: AsRef<str>>(rows: &[R], table: bool) -> Result<(), Failure> {
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = if table {
        let mut tw = tabwriter::TabWriter::new(out).minwidth(10).padding(3);
        rows.iter()
            .try_for_each(|r| writeln!(tw, "{}", r.as_ref()))
            .and_then(|()| tw.flush())
    } else {
        let mut out = out;
        rows.iter()
            .try_for_each(|r| writeln!(out, "{}", r.as_ref()))
            .and_then(|()| out.flush())
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// serde_json's value as the template engine's.
pub fn to_gtmpl(v: &Json) -> Value {
    match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_gtmpl).collect()),
        Json::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), to_gtmpl(v))).collect()),
    }
}

/// The template engine's value back as JSON (for `{{json .X}}`).
fn to_json(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                n.as_f64().map(Json::from).unwrap_or(Json::Null)
            }
        }
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            // Sorted keys, as Go's encoding/json prints maps.
            let sorted: std::collections::BTreeMap<_, _> = o.iter().collect();
            Json::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), to_json(v)))
                    .collect(),
            )
        }
    }
}

fn one_arg<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [v] => Ok(v),
        _ => Err(FuncError::ExactlyXArgs(name.to_string(), 1)),
    }
}

fn string_arg(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(FuncError::Generic(format!(
            "{name}: want a string, got {other}"
        ))),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = one_arg("json", args)?;
    serde_json::to_string(&to_json(v))
        .map(Value::String)
        .map_err(|e| FuncError::Generic(e.to_string()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [Value::Array(items), sep] => {
            let sep = string_arg("join", sep)?;
            Ok(Value::String(
                items
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(&sep),
            ))
        }
        _ => Err(FuncError::Generic(
            "join: want a list and a separator".into(),
        )),
    }
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        string_arg("upper", one_arg("upper", args)?)?.to_uppercase(),
    ))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        string_arg("lower", one_arg("lower", args)?)?.to_lowercase(),
    ))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [s, sep] => {
            let (s, sep) = (string_arg("split", s)?, string_arg("split", sep)?);
            Ok(Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect(),
            ))
        }
        _ => Err(FuncError::Generic(
            "split: want a string and a separator".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &str, v: Json) -> String {
        Format::parse(spec).unwrap().render(&v).unwrap()
    }

    #[test]
    fn go_template_fields_json_and_functions() {
        let v = serde_json::json!({
            "State": {"ExitCode": 3, "Status": "exited", "OOMKilled": false},
            "Config": {"Cmd": ["sh", "-c", "exit 3"], "Env": ["A=1"]},
            "Name": "/web",
        });
        assert_eq!(render("{{.State.ExitCode}}", v.clone()), "3");
        assert_eq!(
            render("{{.State.Status}} {{.State.OOMKilled}}", v.clone()),
            "exited false"
        );
        assert_eq!(
            render("{{json .Config.Cmd}}", v.clone()),
            r#"["sh","-c","exit 3"]"#
        );
        assert_eq!(
            render("{{json .State}}", v.clone()),
            r#"{"ExitCode":3,"OOMKilled":false,"Status":"exited"}"#
        );
        assert_eq!(
            render("{{join .Config.Cmd \" \"}}", v.clone()),
            "sh -c exit 3"
        );
        assert_eq!(
            render("{{upper .Name}}|{{lower \"AB\"}}", v.clone()),
            "/WEB|ab"
        );
        assert_eq!(
            render("{{if eq .State.ExitCode 3}}three{{end}}", v.clone()),
            "three"
        );
        assert_eq!(
            render(r"{{.Name}}\t{{.State.ExitCode}}", v.clone()),
            "/web\t3"
        );
        assert_eq!(
            render("json", serde_json::json!({"b": 1, "a": "x"})),
            r#"{"a":"x","b":1}"#
        );
        let t = Format::parse("table {{.Name}}").unwrap();
        assert!(t.is_table());
        assert_eq!(t.render(&v).unwrap(), "/web");
    }

    #[test]
    fn bad_templates_and_fields_are_errors() {
        let e = Format::parse("{{.State").err().unwrap();
        assert_eq!(e.code, 125);
        assert!(e.message.contains("invalid --format"), "{}", e.message);
        let f = Format::parse("{{.Nope}}").unwrap();
        assert!(f.render(&serde_json::json!({"A": 1})).is_err());
    }
}
