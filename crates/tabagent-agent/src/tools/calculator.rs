//! `calculator`: arithmetic on real numbers, exactly as written (a small recursive-descent
//! parser; no variables, no loops, so nothing it is given can run for long).
//!
//! Grammar: `expr = term (('+' | '-') term)*`, `term = power (('*' | '/' | '%') power)*`,
//! `power = unary ('^' power)?` (`**` too; right-associative), `unary = ('-' | '+') unary | call`,
//! `call = name '(' expr (',' expr)* ')' | name | number | '(' expr ')'`.

use serde::Deserialize;
use serde_json::{json, Value};
use tabagent_core::ToolSpec;

use super::{arguments, Tool, ToolError, ToolFuture};

/// The most characters an expression may have, and how deep parentheses may nest.
const MAX_LENGTH: usize = 1000;
const MAX_DEPTH: usize = 64;

/// The calculator tool.
pub struct Calculator;

#[derive(Deserialize)]
struct Arguments {
    expression: String,
}

impl Tool for Calculator {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "calculator".into(),
            description: Some(
                "Evaluates an arithmetic expression exactly as written: + - * / % ^ (power), \
                 parentheses, the constants pi and e, and sqrt, abs, exp, ln, log10, log2, sin, \
                 cos, tan, asin, acos, atan, floor, ceil, round, min, max."
                    .into(),
            ),
            parameters: json!({
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "the arithmetic expression to evaluate"}},
                "required": ["expression"],
                "additionalProperties": false
            }),
            strict: false,
        }
    }

    fn call(&self, arguments_json: Value) -> ToolFuture<'_> {
        Box::pin(async move {
            let Arguments { expression } = arguments(arguments_json)?;
            let value = evaluate(&expression).map_err(ToolError::Failed)?;
            // The expression with its value: a bare number is easily taken for a new question.
            Ok(format!("{} = {}", expression.trim(), format_number(value)))
        })
    }
}

/// Integers without a fraction, everything else as Rust prints an f64 (shortest round-trip).
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The value of `expression`, or why it has none.
pub fn evaluate(expression: &str) -> Result<f64, String> {
    if expression.len() > MAX_LENGTH {
        return Err(format!(
            "the expression is longer than {MAX_LENGTH} characters"
        ));
    }
    let mut parser = Parser {
        text: expression.as_bytes(),
        at: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    parser.skip_spaces();
    if parser.at < parser.text.len() {
        return Err(format!(
            "unexpected {:?} at position {}",
            expression[parser.at..].chars().next().unwrap_or(' '),
            parser.at + 1
        ));
    }
    if !value.is_finite() {
        return Err("the result is not a finite number (a division by zero or an overflow)".into());
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<f64, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let mut value = self.term()?;
        loop {
            if self.eat(b'+') {
                value += self.term()?;
            } else if self.eat(b'-') {
                value -= self.term()?;
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(value)
    }

    fn term(&mut self) -> Result<f64, String> {
        let mut value = self.power()?;
        loop {
            if self.peek() == Some(b'*') && self.text.get(self.at + 1) != Some(&b'*') {
                self.at += 1;
                value *= self.power()?;
            } else if self.eat(b'/') {
                value /= self.power()?;
            } else if self.eat(b'%') {
                value %= self.power()?;
            } else {
                break;
            }
        }
        Ok(value)
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.unary()?;
        let raised = if self.eat(b'^') {
            true
        } else if self.peek() == Some(b'*') && self.text.get(self.at + 1) == Some(&b'*') {
            self.at += 2;
            true
        } else {
            false
        };
        if raised {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            let exponent = self.power()?;
            self.depth -= 1;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    fn unary(&mut self) -> Result<f64, String> {
        if self.eat(b'-') || self.eat(b'+') {
            let negative = self.text[self.at - 1] == b'-';
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} levels"));
            }
            let value = self.unary()?;
            self.depth -= 1;
            return Ok(if negative { -value } else { value });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<f64, String> {
        match self.peek() {
            Some(b'(') => {
                self.at += 1;
                let value = self.expr()?;
                if !self.eat(b')') {
                    return Err("a parenthesis is not closed".into());
                }
                Ok(value)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.name(),
            Some(c) => Err(format!(
                "unexpected {:?} at position {}",
                c as char,
                self.at + 1
            )),
            None => Err("the expression ends too early".into()),
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'.' || *c == b'_')
        {
            self.at += 1;
        }
        // An exponent: 1e6, 2.5E-3.
        if matches!(self.text.get(self.at), Some(b'e' | b'E'))
            && self
                .text
                .get(self.at + 1)
                .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+')
        {
            self.at += 2;
            while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
                self.at += 1;
            }
        }
        let written: String = String::from_utf8_lossy(&self.text[start..self.at]).replace('_', "");
        written
            .parse()
            .map_err(|_| format!("{written:?} is not a number"))
    }

    fn name(&mut self) -> Result<f64, String> {
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            self.at += 1;
        }
        let name = String::from_utf8_lossy(&self.text[start..self.at]).to_lowercase();
        match name.as_str() {
            "pi" => return Ok(std::f64::consts::PI),
            "e" => return Ok(std::f64::consts::E),
            _ => {}
        }
        if !self.eat(b'(') {
            return Err(format!("unknown name {name:?}"));
        }
        let mut args = vec![self.expr()?];
        while self.eat(b',') {
            args.push(self.expr()?);
        }
        if !self.eat(b')') {
            return Err(format!("{name}( is not closed"));
        }
        let one = |f: fn(f64) -> f64| match args.as_slice() {
            [x] => Ok(f(*x)),
            _ => Err(format!("{name} takes one argument, not {}", args.len())),
        };
        match name.as_str() {
            "sqrt" => one(f64::sqrt),
            "abs" => one(f64::abs),
            "exp" => one(f64::exp),
            "ln" => one(f64::ln),
            "log" | "log10" => one(f64::log10),
            "log2" => one(f64::log2),
            "sin" => one(f64::sin),
            "cos" => one(f64::cos),
            "tan" => one(f64::tan),
            "asin" => one(f64::asin),
            "acos" => one(f64::acos),
            "atan" => one(f64::atan),
            "floor" => one(f64::floor),
            "ceil" => one(f64::ceil),
            "round" => one(f64::round),
            "min" => Ok(args.iter().copied().fold(f64::INFINITY, f64::min)),
            "max" => Ok(args.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            _ => Err(format!("unknown function {name:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn arithmetic_follows_the_usual_precedence() {
        for (expression, value) in [
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("2 ** 10", 1024.0),
            ("-2 ^ 2", 4.0),
            ("10 / 4", 2.5),
            ("17 % 5", 2.0),
            ("sqrt(16) + abs(-3)", 7.0),
            ("max(1, 7, 3) - min(4, 2)", 5.0),
            ("1_000 * 1.5e3", 1_500_000.0),
            ("round(pi * 100)", 314.0),
        ] {
            assert_eq!(evaluate(expression), Ok(value), "{expression}");
        }
        assert_eq!(format_number(evaluate("2 ^ 40").unwrap()), "1099511627776");
        assert_eq!(
            format_number(evaluate("1 / 3").unwrap()),
            "0.3333333333333333"
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expression, said) in [
            ("1 / 0", "not a finite number"),
            ("2 +", "ends too early"),
            ("(1 + 2", "not closed"),
            ("1 + x", "unknown name"),
            ("foo(1)", "unknown function"),
            ("sqrt(1, 2)", "one argument"),
            ("1 $ 2", "unexpected"),
        ] {
            let error = evaluate(expression).unwrap_err();
            assert!(error.contains(said), "{expression}: {error}");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(evaluate(&deep).unwrap_err().contains("nested"));
        let minus = format!("{}1", "-".repeat(500));
        assert!(evaluate(&minus).unwrap_err().contains("nested"));
        assert!(evaluate(&"1+".repeat(600)).unwrap_err().contains("longer"));
    }
}
