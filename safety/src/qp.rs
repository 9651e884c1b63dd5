//! A small dense QP front end over clarabel:
//! minimise ½ xᵀ diag(p) x + qᵀx subject to rows aᵢ·x ≥ bᵢ and a box lo ≤ x ≤ hi.

use clarabel::algebra::CscMatrix;
use clarabel::solver::{DefaultSettings, DefaultSolver, IPSolver, NonnegativeConeT, SolverStatus};

/// Outcome of a solve.
#[derive(Debug, Clone, PartialEq)]
pub struct QpSolution {
    pub x: Vec<f64>,
    /// Multipliers of the rows (≥ 0), then of the upper box, then of the lower box.
    pub rows_dual: Vec<f64>,
    pub upper_dual: Vec<f64>,
    pub lower_dual: Vec<f64>,
    pub iterations: u32,
}

/// Why a solve failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QpError {
    #[error("QP is infeasible")]
    Infeasible,
    #[error("QP solver: {0}")]
    Solver(String),
    #[error("filter input: {0}")]
    Input(String),
}

/// A dense QP in the form above. `rows` holds `(a, b)` with `a.len() == n`.
#[derive(Debug, Clone, Default)]
pub struct DenseQp {
    pub p_diag: Vec<f64>,
    pub q: Vec<f64>,
    pub rows: Vec<(Vec<f64>, f64)>,
    pub lo: Vec<f64>,
    pub hi: Vec<f64>,
}

impl DenseQp {
    pub fn n(&self) -> usize {
        self.q.len()
    }

    /// Solves with clarabel (Ax + s = b, s ≥ 0 form: rows become −aᵢ·x + s = −bᵢ).
    pub fn solve(&self) -> Result<QpSolution, QpError> {
        let n = self.n();
        let m = self.rows.len() + 2 * n;
        // Column-major A: for each variable, its entries in rows, upper box, lower box.
        let mut colptr = Vec::with_capacity(n + 1);
        let mut rowval = Vec::new();
        let mut nzval = Vec::new();
        for j in 0..n {
            colptr.push(rowval.len());
            for (i, (a, _)) in self.rows.iter().enumerate() {
                let v = a.get(j).copied().unwrap_or(0.0);
                if v != 0.0 {
                    rowval.push(i);
                    nzval.push(-v);
                }
            }
            rowval.push(self.rows.len() + j);
            nzval.push(1.0);
            rowval.push(self.rows.len() + n + j);
            nzval.push(-1.0);
        }
        colptr.push(rowval.len());
        let a = CscMatrix::new(m, n, colptr, rowval, nzval);
        let mut b: Vec<f64> = self.rows.iter().map(|(_, b)| -b).collect();
        b.extend(self.hi.iter().copied());
        b.extend(self.lo.iter().map(|l| -l));
        let p = CscMatrix::new(
            n,
            n,
            (0..=n).collect(),
            (0..n).collect(),
            self.p_diag.clone(),
        );
        let settings = DefaultSettings {
            verbose: false,
            tol_gap_abs: 1e-9,
            tol_gap_rel: 1e-9,
            tol_feas: 1e-9,
            ..DefaultSettings::default()
        };
        let cones = [NonnegativeConeT(m)];
        let mut solver = DefaultSolver::new(&p, &self.q, &a, &b, &cones, settings)
            .map_err(|e| QpError::Solver(e.to_string()))?;
        solver.solve();
        match solver.solution.status {
            SolverStatus::Solved | SolverStatus::AlmostSolved => {}
            SolverStatus::PrimalInfeasible | SolverStatus::AlmostPrimalInfeasible => {
                return Err(QpError::Infeasible);
            }
            other => return Err(QpError::Solver(format!("{other:?}"))),
        }
        let z = &solver.solution.z;
        let k = self.rows.len();
        Ok(QpSolution {
            x: solver.solution.x.clone(),
            rows_dual: z[..k].to_vec(),
            upper_dual: z[k..k + n].to_vec(),
            lower_dual: z[k + n..].to_vec(),
            iterations: solver.solution.iterations,
        })
    }

    /// Largest violation of the KKT conditions at `s` (stationarity, primal and dual
    /// feasibility, complementarity), scaled by the problem's magnitude.
    pub fn kkt_residual(&self, s: &QpSolution) -> f64 {
        let n = self.n();
        let scale = 1.0
            + self
                .q
                .iter()
                .chain(self.rows.iter().map(|(_, b)| b))
                .fold(0.0f64, |m, v| m.max(v.abs()));
        let mut worst = 0.0f64;
        // Stationarity: P x + q − Σ λᵢ aᵢ + μ_hi − μ_lo = 0.
        for j in 0..n {
            let mut g = self.p_diag[j] * s.x[j] + self.q[j] + s.upper_dual[j] - s.lower_dual[j];
            for ((a, _), l) in self.rows.iter().zip(&s.rows_dual) {
                g -= l * a[j];
            }
            worst = worst.max(g.abs() / scale);
        }
        for ((a, b), l) in self.rows.iter().zip(&s.rows_dual) {
            let slack: f64 = a.iter().zip(&s.x).map(|(a, x)| a * x).sum::<f64>() - b;
            worst = worst
                .max((-slack).max(0.0) / scale)
                .max((-l).max(0.0))
                .max((l * slack).abs() / scale);
        }
        for j in 0..n {
            let (su, sl) = (self.hi[j] - s.x[j], s.x[j] - self.lo[j]);
            worst = worst
                .max((-su).max(0.0) / scale)
                .max((-sl).max(0.0) / scale)
                .max((s.upper_dual[j] * su).abs() / scale)
                .max((s.lower_dual[j] * sl).abs() / scale)
                .max((-s.upper_dual[j]).max(0.0))
                .max((-s.lower_dual[j]).max(0.0));
        }
        worst
    }
}
